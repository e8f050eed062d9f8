"""Results a user can trust (issue 16): diverged runs, run identity, damaged checkpoints, progress, reports."""
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from mixlab.cli import build_parser, main
from mixlab.methods.base import ERM
from mixlab.registry import METHODS
from mixlab.results import ResultsStore, summarize
from mixlab.train import TrainConfig, Trainer

TINY = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.125, "fc_dim": 128}, epochs=3, batch_size=64,
            lr=0.05, milestones=(2,))
CLI_TINY = ["--dataset", "digits", "--model", "cnn11", "--model-arg", "width=0.125", "--model-arg", "fc_dim=128",
            "--lr", "0.05", "--no-progress"]


class NanFromStep(ERM):
    """ERM whose loss turns NaN from its ``nan_step``-th call (1-based): a run that diverges at a known step."""

    name = "test-nan"

    def __init__(self, num_classes=None, seed=0, check_inputs=True, nan_step=5):
        super().__init__(num_classes, seed, check_inputs)
        self.nan_step, self.calls = nan_step, 0

    def training_loss(self, model, x, targets, loss_fn=None):
        self.calls += 1
        loss = super().training_loss(model, x, targets)
        return loss * float("nan") if self.calls >= self.nan_step else loss


@pytest.fixture
def nan_method(monkeypatch):
    monkeypatch.setitem(METHODS, "test-nan", NanFromStep)
    return "test-nan"


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ diverging runs
def test_a_diverging_run_stops_is_stored_as_diverged_and_never_averaged(tmp_path, nan_method):
    from mixlab.data import load_dataset
    from mixlab.results import diverged_runs

    n = len(load_dataset("digits", "train").y)
    steps_per_epoch = n // 64 + (n % 64 >= 2)  # a final batch of one is skipped
    nan_step = steps_per_epoch + 4  # the 4th step of the second epoch
    config = TrainConfig(method=nan_method, method_kwargs={"nan_step": nan_step}, **TINY)
    trainer = Trainer(config, out=tmp_path, progress=False)
    result = trainer.run()
    assert result["status"] == "diverged" and result["test_error"] is None
    assert (result["diverged_epoch"], result["diverged_step"]) == (2, nan_step)
    assert len(result["history"]) == 1 and trainer.method.calls == 2 * steps_per_epoch  # stopped after epoch 2
    assert torch.load(trainer.checkpoint_path, weights_only=False)["epoch"] == 0  # the last finite epoch's state
    ok = Trainer(TrainConfig(method="erm", **{**TINY, "epochs": 1}), out=tmp_path, progress=False).run()
    runs = ResultsStore(tmp_path).runs()
    assert {r["run_id"]: r["status"] for r in runs} == {result["run_id"]: "diverged", ok["run_id"]: "ok"}
    assert [r["method"] for r in summarize(runs)] == ["erm"]
    (d,) = diverged_runs(runs)
    assert (d["method"], d["diverged_epoch"], d["diverged_step"]) == (nan_method, 2, nan_step)


def test_train_lr_1e6_reports_divergence_in_json_and_exit_status(tmp_path, capsys):
    code = main(["train", *CLI_TINY, "--method", "mixup", "--lr", "1e6", "--epochs", "1", "--out", str(tmp_path),
                 "--json"])
    out = capsys.readouterr().out
    d = last_json(out)
    assert code == 3 and d["status"] == "diverged" and d["test_error"] is None
    assert d["diverged_epoch"] == 1 and d["diverged_step"] >= 1 and "DIVERGED" in out
    (run,) = ResultsStore(tmp_path).runs()
    assert run["status"] == "diverged" and run["test_error"] is None
    assert main(["train", *CLI_TINY, "--epochs", "1", "--out", str(tmp_path), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["status"] == "ok"


def test_bench_and_report_go_on_and_list_diverged_runs_apart(tmp_path, capsys, nan_method):
    args = ["bench", "--protocol", "digits-quick", "--methods", f"erm,{nan_method}", "--trials", "1", "--epochs", "1",
            "--out", str(tmp_path), "--json", "--no-progress"]
    assert main(args) == 3
    out = capsys.readouterr().out
    d = last_json(out)
    assert set(d["methods"]) == {"erm"} and [r["method"] for r in d["diverged"]] == [nan_method]
    assert f"{nan_method} seed 0: DIVERGED at epoch 1, step 5" in out and "1 run(s) diverged" in out
    assert main(args) == 3  # found in the store: still named, still not averaged
    assert "done already" in capsys.readouterr().out
    assert main(["report", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table, _, apart = out.partition("diverged")
    assert "erm" in table and nan_method not in table and f"{nan_method} seed 0" in apart and "step 5" in apart
    assert main(["report", "--out", str(tmp_path), "--json"]) == 0
    rows = last_json(capsys.readouterr().out)
    assert [(r["status"], r["method"]) for r in rows] == [("ok", "erm"), ("diverged", nan_method)]
    assert main(["eval", "accuracy", "--run", rows[1]["run_id"], "--out", str(tmp_path)]) == 2  # no model to evaluate
    assert "diverged" in capsys.readouterr().err


def test_reproduce_goes_on_and_exits_non_zero_naming_diverged_runs(tmp_path, capsys, monkeypatch, nan_method):
    from mixlab import reproduce
    from mixlab.protocols import PROTOCOLS, Protocol

    monkeypatch.setitem(PROTOCOLS, "test-tiny", Protocol(
        "test-tiny", "digits, 1 epoch", dict(TINY, epochs=1, subset_per_class=10, test_limit=100), ("erm",), trials=1))
    rep = reproduce.Reproduction("test-tiny", "tiny", (reproduce.Table(
        "t", (reproduce.Row("Baseline", "erm"), reproduce.Row("NaN", nan_method, {"nan_step": 2})),
        (reproduce.Column("digits", "test-tiny", "test-tiny"),
         reproduce.Column("acc", "test-tiny", "test-tiny", value="eval:accuracy:top1_error"))),),)
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-tiny", rep)
    code = main(["reproduce", "test-tiny", "--quick", "--out", str(tmp_path), "--report-dir", str(tmp_path / "r"),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 3 and f"{nan_method} seed 0" in out.split("1 run(s) diverged")[-1]
    assert "[eval 1/1] accuracy" in out  # progress of the evaluations (the diverged run has none)
    text = (tmp_path / "r" / "report.md").read_text()
    assert "**1 run(s) diverged**" in text and "1 of 1 runs diverged" in text
    assert text.count("(n=1)") == 2 and "± 0.00" not in text  # one trial: no spread shown


# ---------------------------------------------------------------------------------------------- run identity
def test_identity_covers_threads_device_kind_and_code_revisions(monkeypatch):
    from mixlab import config as engine  # where the identity (and ENGINE_REVISION) is defined

    base = TrainConfig(**TINY)
    identity = base.identity()
    assert identity["threads"] == 1 and identity["device"] == "cpu"  # cnn11: one thread by default
    assert identity["engine_revision"] == engine.ENGINE_REVISION
    assert TrainConfig(**TINY, threads=1).run_id() == base.run_id()
    assert TrainConfig(**TINY, threads=2).run_id() != base.run_id()
    assert TrainConfig(**TINY, bf16=True).run_id() != base.run_id()
    assert TrainConfig(**TINY, device="cuda").identity().get("threads") is None  # not a CPU run
    assert TrainConfig(**TINY, device="cuda").run_id() != base.run_id()
    assert TrainConfig.from_identity(TrainConfig(**TINY, threads=2).identity()).run_id() == \
        TrainConfig(**TINY, threads=2).run_id()
    assert identity["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    before = base.run_id()
    other = "AVX2" if identity["cpu_capability"] != "AVX2" else "DEFAULT"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)  # another CPU's kernels
    assert base.run_id() != before and TrainConfig(**TINY, device="cuda").identity().get("cpu_capability") is None
    monkeypatch.undo()
    assert base.run_id() == before
    monkeypatch.setattr(engine, "ENGINE_REVISION", engine.ENGINE_REVISION + 1)  # numerics changed: new ids
    assert base.run_id() != before


def test_default_threads_rule():
    from mixlab.config import default_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_threads(TrainConfig(model="cnn11")) == 1
    assert default_threads(TrainConfig(model="kim-cnn")) == 1
    assert default_threads(TrainConfig(model="preactresnet18")) == cores


def test_a_run_trains_with_its_threads_and_gives_them_back(tmp_path, monkeypatch):
    seen = []
    original = Trainer.train_epoch

    def spy(self, epoch):
        seen.append(torch.get_num_threads())
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    torch.set_num_threads(2)
    try:
        Trainer(TrainConfig(**{**TINY, "epochs": 1}), out=tmp_path, progress=False).run()
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


TRAIN_IN_A_FRESH_PROCESS = """
import sys, torch
from mixlab.train import TrainConfig, Trainer
config = TrainConfig(dataset="digits", model="cnn11", model_kwargs={"width": 0.125, "fc_dim": 128}, epochs=1,
                     batch_size=64, lr=0.05, method="mixup", subset_per_class=40)
trainer = Trainer(config, out=sys.argv[1], progress=False, store=False)
trainer.run()
torch.save(trainer.model.state_dict(), sys.argv[2])
"""


def test_a_run_gives_bit_identical_weights_in_fresh_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, str(tmp_path / f"o{i}"),
                               str(tmp_path / f"w{i}.pt")], env=env, stderr=subprocess.PIPE, text=True)
             for i in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    a, b = (torch.load(tmp_path / f"w{i}.pt") for i in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ checkpoints
def damaged_checkpoint(tmp_path, how):
    config = TrainConfig(method="erm", **{**TINY, "epochs": 2})
    trainer = Trainer(config, out=tmp_path, progress=False, store=False)
    trainer.setup()
    trainer.save_checkpoint(0)
    data = trainer.checkpoint_path.read_bytes()
    trainer.checkpoint_path.write_bytes(b"" if how == "empty" else data[:len(data) // 2])
    return config, trainer.checkpoint_path


@pytest.mark.parametrize("how", ["empty", "truncated"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, capsys, how):
    from mixlab.train.engine import CorruptCheckpoint

    config, path = damaged_checkpoint(tmp_path, how)
    with pytest.raises(CorruptCheckpoint) as error:
        Trainer(config, out=tmp_path, progress=False).run(resume=True)
    assert str(path) in str(error.value) and "Delete or rename" in str(error.value)
    args = ["train", *CLI_TINY, "--epochs", "2", "--milestones", "2", "--batch-size", "64", "--out", str(tmp_path),
            "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err and ("empty" if how == "empty" else "truncated") in err


def test_bench_moves_a_damaged_checkpoint_aside_and_goes_on(tmp_path, capsys):
    from mixlab.protocols import get_protocol

    config = get_protocol("digits-quick").train_config("mixup", 0, epochs=1)
    path = tmp_path / "runs" / config.run_id() / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    args = ["bench", "--protocol", "digits-quick", "--methods", "erm,mixup", "--trials", "1", "--epochs", "1",
            "--out", str(tmp_path), "--json", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert set(last_json(out)["methods"]) == {"erm", "mixup"} and "moved it aside" in out
    assert path.with_name("checkpoint.pt.corrupt").exists() and torch.load(path, weights_only=False)["epoch"] == 0


def test_resume_message_says_how_many_epochs_are_done(tmp_path, capsys):
    config = TrainConfig(method="erm", **{**TINY, "epochs": 2})
    part = Trainer(config, out=tmp_path, progress=False, store=False)
    part.setup()
    part.history.append({"epoch": 1, "train_loss": None})
    part.save_checkpoint(0)
    Trainer(config, out=tmp_path, progress=False).run(resume=True)
    assert "after epoch 1 of 2" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- progress
def test_without_a_terminal_training_prints_progress_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Trainer, "progress_every_s", 0.0)
    Trainer(TrainConfig(method="erm", **TINY), out=tmp_path).run()  # progress=None: auto; stderr is no terminal
    err = capsys.readouterr().err
    assert "erm s0: epoch 1 of 3" in err and "epoch 2 of 3" in err
    Trainer(TrainConfig(method="erm", seed=1, **TINY), out=tmp_path, progress=False).run()
    assert "epoch" not in capsys.readouterr().err  # --no-progress: quiet


def test_the_cli_prints_lines_as_they_come_into_a_pipe_or_file(monkeypatch):
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # not a terminal, block-buffered like a log file
    monkeypatch.setattr(sys, "stdout", stream)
    assert not stream.line_buffering
    main(["methods"])
    assert stream.line_buffering


# ---------------------------------------------------------------------------------------------------- reports
def test_one_trial_shows_n_1_and_no_spread_and_bench_shows_the_settings_used(tmp_path, capsys):
    args = ["bench", "--protocol", "digits-quick", "--methods", "erm", "--trials", "1", "--epochs", "2",
            "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epochs 2 (protocol: 15)" in out and "trials 1" in out and "1 CPU thread per run" in out
    row = next(line for line in out.splitlines() if line.startswith("erm "))
    assert "(n=1)" in row and "+-" not in row
    assert main(["report", "--out", str(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " erm " in line)
    assert "(n=1)" in row and "+-" not in row


def test_train_help_gives_every_flag_its_meaning_and_default():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = [a for a in train._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 30
    missing = [a.option_strings[0] for a in flags if not a.help or "default" not in a.help]
    assert not missing, f"flags without meaning or default in mixlab train --help: {missing}"
    text = train.format_help()
    assert "else 10)" in text and "else 50)" in text  # TrainConfig's epochs and batch size


def _cv_run(method, seed, fold, error, **method_kwargs):
    config = {"dataset": "subj", "model": "kim-cnn", "seed": seed, "method": method,
              "data_kwargs": {"dev_fraction": 0.1, "fold": fold}, "method_kwargs": method_kwargs}
    return {"run_id": f"{method}-{seed}-{fold}-{sorted(method_kwargs)}", "protocol": "amp-subj-cnn-quick",
            "dataset": "subj", "model": "kim-cnn", "method": method, "seed": seed, "status": "ok",
            "test_error": error, "metrics": {"test_error": error}, "config": config}


def test_report_rows_treat_cross_validation_folds_as_parts_of_a_trial():
    """Quick CV protocols train trial s on fold s: one row over the seeds, not one row per fold; a full CV trial
    (several folds of one seed) is the mean over its folds, and the spread is over seeds."""
    from mixlab.results import summarize

    quick = [_cv_run("erm", s, s, e) for s, e in ((0, 11.0), (1, 12.1), (2, 12.4))]
    (row,) = summarize(quick)
    assert row["trials"] == 3 and row["mean_error"] == pytest.approx(11.833333) and row["variant"] == ""
    full = [_cv_run("erm", s, f, 10.0 + s + f) for s in (0, 1) for f in (0, 1, 2)]
    (row,) = summarize(full)
    assert row["trials"] == 2 and sorted(row["errors"]) == pytest.approx([11.0, 12.0])


def test_report_paired_differences_match_seed_by_seed():
    from mixlab.results import summarize
    from mixlab.results.store import paired_differences

    runs = [_cv_run("sentmixup", s, s, e) for s, e in ((0, 11.5), (1, 10.5), (2, 11.1))]
    runs += [_cv_run("amp+sentmixup", s, s, e) for s, e in ((0, 11.8), (1, 12.4), (2, 12.4))]
    runs += [_cv_run("amp+sentmixup", s, s, e, shared_dropout=True) for s, e in ((0, 11.2), (2, 11.8))]
    rows = summarize(runs)
    by = {(d["method"], d["options"]): d for d in paired_differences(rows, "sentmixup")}
    amp = by[("amp+sentmixup", "")]
    assert amp["diffs"] == pytest.approx([0.3, 1.9, 1.3]) and amp["mean_diff"] == pytest.approx(7 / 6)
    assert amp["std_diff"] == pytest.approx(0.8083, abs=1e-4) and amp["base"] == "sentmixup"
    shared = by[("amp+sentmixup", "shared_dropout=true")]
    assert shared["paired_seeds"] == [0, 2] and shared["diffs"] == pytest.approx([-0.3, 0.7])
    # the base among two rows of one method: the one with fewer options, or the one named with its options
    (d,) = [d for d in paired_differences(rows, "amp+sentmixup") if d["method"] == "amp+sentmixup"]
    assert d["options"] == "shared_dropout=true" and d["diffs"] == pytest.approx([-0.6, -0.6])
    named = paired_differences(rows, "amp+sentmixup (shared_dropout=true)")
    assert {d["base"] for d in named} == {"amp+sentmixup (shared_dropout=true)"}
    with pytest.raises(ValueError, match="no row of method 'mixup'"):
        paired_differences(rows, "mixup")
