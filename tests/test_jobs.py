"""``--jobs N``: runs trained side by side in worker processes give the same run ids, store rows and weights as one
after another (issue 20, "Sweeps")."""
import dataclasses
import re
from pathlib import Path

import pytest
import torch

from mixlab.config import TrainConfig, fit_to_jobs
from mixlab.results import ResultsStore
from mixlab.train import train_missing

TINY = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.125, "fc_dim": 128}, epochs=1, batch_size=64,
            lr=0.05, subset_per_class=40)


def sweep(tmp_path, jobs: int, configs, **kwargs):
    lines = []
    out = tmp_path / f"jobs{jobs}"
    ids, locked = train_missing(configs, out, progress=False, log=lines.append, jobs=jobs, **kwargs)
    return out, ids, locked, lines


def test_jobs_2_gives_the_runs_and_numbers_of_jobs_1(tmp_path):
    configs = [TrainConfig(method=m, seed=s, **TINY) for m in ("erm", "mixup") for s in (0, 1)]
    configs.append(TrainConfig(method="mixup", seed=0, **{**TINY, "lr": 1e6}))  # diverges: reported as alone
    one, ids1, locked1, lines1 = sweep(tmp_path, 1, configs)
    two, ids2, locked2, lines2 = sweep(tmp_path, 2, configs)
    assert ids1 == ids2 and len(set(ids1)) == 5 and locked1 == locked2 == set()
    assert any("2 at a time" in line for line in lines2)
    for rid in ids1:
        a, b = ResultsStore(one).get_run(rid), ResultsStore(two).get_run(rid)
        assert a["status"] == b["status"]
        for key in ("test_error", "test_top5_error"):
            assert a[key] == b[key]
        assert a["metrics"]["history"] == b["metrics"]["history"]  # train losses, epoch by epoch
        for key in ("diverged_epoch", "diverged_step", "diverged_loss"):
            assert a["metrics"].get(key) == b["metrics"].get(key)
        if a["status"] == "diverged":  # stopped in its first epoch: no checkpoint in either store
            assert not (one / "runs" / rid / "checkpoint.pt").exists()
            assert not (two / "runs" / rid / "checkpoint.pt").exists()
            continue
        wa = torch.load(one / "runs" / rid / "checkpoint.pt", weights_only=False)["model"]
        wb = torch.load(two / "runs" / rid / "checkpoint.pt", weights_only=False)["model"]
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), rid
    diverged = [rid for rid in ids1 if ResultsStore(two).get_run(rid)["status"] == "diverged"]
    assert len(diverged) == 1
    for lines in (lines1, lines2):  # each finished run logged once, the diverged one as such
        assert sum("DIVERGED at epoch 1" in line for line in lines) == 1
        assert sum(re.search(r"test error \d+\.\d\d%", line) is not None for line in lines) == 4
    # a second sweep finds every run stored and trains nothing
    _, again, _, lines = sweep(tmp_path, 2, configs, say_done=True)
    assert again == ids1 and sum("done already" in line for line in lines) == 5


def test_a_failing_run_stops_the_sweep_and_is_named(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    configs = [TrainConfig(method="erm", seed=s, **{**TINY, "dataset": "mnist"}) for s in (0, 1)]
    lines = []
    with pytest.raises(Exception, match="mnist"):  # raised in a worker (data are loaded there), raised again here
        train_missing(configs, tmp_path / "out", data_dir=str(empty), progress=False, log=lines.append, jobs=2)
    assert any("FAILED" in line and "erm seed" in line for line in lines)


def test_run_ids_follow_threads_never_jobs(monkeypatch):
    import mixlab.config as config_module

    monkeypatch.setattr(config_module, "cpu_cores", lambda: 4)
    small = TrainConfig(method="erm", **TINY)  # one thread by default: fits beside any number of runs
    assert all(fit_to_jobs(small, n).run_id() == small.run_id() for n in (1, 2, 3, 8))
    explicit = dataclasses.replace(small, threads=3)  # an explicit count is never changed
    assert fit_to_jobs(explicit, 4).run_id() == explicit.run_id()
    wide = TrainConfig(method="erm", dataset="digits", model="preactresnet18")  # parallel_cpu: every core alone
    assert wide.identity()["threads"] == 4 and fit_to_jobs(wide, 1).run_id() == wide.run_id()
    fitted = fit_to_jobs(wide, 2)
    assert fitted.threads == 2 and fitted.run_id() == dataclasses.replace(wide, threads=2).run_id()
    assert fitted.run_id() != wide.run_id()
    assert fit_to_jobs(wide, 8).threads == 1  # at least one thread
    gpu = dataclasses.replace(wide, device="cuda")  # no threads in a GPU run's identity: left alone
    assert fit_to_jobs(gpu, 2) is gpu


def test_a_teacher_trained_by_another_process_is_waited_for(tmp_path, capsys):
    """TransformMix's teacher is the sweep's erm run of the seed: beside it (--jobs), its setup waits and reuses it."""
    import threading

    from mixlab.search import run_waiting
    from mixlab.train import Trainer
    from mixlab.locks import run_lock

    trainer = Trainer(TrainConfig(method="erm", **TINY), out=tmp_path, progress=False, store=False)
    held, release = threading.Event(), threading.Event()

    def hold():  # another process's lock on the run (flock: another open file conflicts within a process too)
        with run_lock(trainer.run_dir):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(30)
    threading.Timer(0.5, release.set).start()
    result = run_waiting(trainer, poll_s=0.05)
    holder.join()
    assert result["status"] == "ok" and "waiting: " in capsys.readouterr().err


def test_perf_sweep_times_the_same_sweep_both_ways(capsys):
    import json

    from mixlab.cli import main

    # one run, so no worker process to start: the command's plumbing (the worker pool itself: the tests above)
    code = main(["perf", "--sweep", "--protocol", "digits-quick", "--methods", "mixup", "--trials", "1",
                 "--epochs", "1", "--jobs", "2", "--json"])
    text = capsys.readouterr().out
    r = json.loads(text.strip().splitlines()[-1])
    assert code == 0 and r["same_numbers"] and r["goal"] is None  # not issue 20's sweep: no goal claimed
    seq, par = r["sequential"], r["parallel"]
    assert (seq["jobs"], par["jobs"], seq["runs"], par["runs"]) == (1, 2, 1, 1)
    assert seq["test_errors"] == par["test_errors"] and len(seq["test_errors"]) == 1
    for m in (seq, par):
        assert m["runs_per_hour"] == pytest.approx(3600 * m["runs"] / m["wall_seconds"])
    assert r["speedup"] == pytest.approx(par["runs_per_hour"] / seq["runs_per_hour"])
    assert f"{r['speedup']:.2f}x runs per hour" in text and "load average" in text


@pytest.mark.slow
def test_gpu_table4_script_runs_its_cpu_path(tmp_path, data_root):
    """scripts/gpu_table4.sh (issue 20, "A GPU when one is lent") with MIXLAB_GPU_TABLE4_TINY=1: the same reproduce
    invocation, made tiny and on the CPU, writes the MNIST(sub) report and keeps the store's results.db beside it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MIXLAB_GPU_TABLE4_TINY": "1", "DATA": str(data_root), "STORE": str(tmp_path / "store"),
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(repo / "scripts" / "gpu_table4.sh"), str(tmp_path / "report")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "--columns 'MNIST(sub)'" in report and "--jobs 2" in report
    assert "part of the reproduction only: columns MNIST(sub); methods erm, mixup" in report
    row = next(line for line in report.splitlines() if line.startswith("| Baseline"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert "(n=1)" in cells[4] and cells[2].startswith("n/a")  # MNIST(sub) ours has a number, MNIST(full) none
    store = ResultsStore(tmp_path / "store")
    assert len(store.runs()) == 2 and (tmp_path / "report" / "results.db").exists()
    assert "exit 0" in (tmp_path / "report" / "log.txt").read_text()


def test_reproduce_selection_names_what_it_does_not_know():
    from mixlab.reproduce import Selection, get_reproduction

    rep = get_reproduction("automix-table4")
    Selection(columns=("MNIST(sub)",), methods=("erm",)).check(rep)
    with pytest.raises(ValueError, match=r"--columns: automix-table4 has no 'MNIST sub'; it has MNIST\(full\)"):
        Selection(columns=("MNIST sub",)).check(rep)
    with pytest.raises(ValueError, match="--methods: automix-table4 has no 'cutmix'; it has erm, bc"):
        Selection(methods=("cutmix",)).check(rep)


@pytest.mark.slow
def test_ray_tasks_bring_results_and_checkpoints_back_and_retry_killed_workers(tmp_path):
    """--executor ray on a local Ray instance: every task's worker dies after its first epoch (fault injection), Ray
    retries it, and it resumes from its last checkpoint: in --out (a shared folder), or sent to the driver's keeper
    and copied back (as on a cluster without one). Both give the numbers and weights of runs trained one by one."""
    ray = pytest.importorskip("ray")
    from mixlab.train.cluster import train_on_ray

    configs = [TrainConfig(method=m, seed=0, **{**TINY, "epochs": 2}) for m in ("erm", "mixup")]
    texts = [f"  {c.method}" for c in configs]
    local, ids, _, _ = sweep(tmp_path, 1, configs)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
                                       "OMP_WAIT_POLICY": "PASSIVE"}})
    try:
        for copy_back in (False, True):
            out, lines = tmp_path / f"ray-{copy_back}", []
            locked = train_on_ray(configs, texts, out, log=lines.append, copy_back=copy_back, _die_after_epoch=1)
            assert locked == set() and sum("test error" in line for line in lines) == 2
            finished = [line for line in lines if "%" in line]
            assert all(("trained on a node without --out" in line) == copy_back for line in finished)
            assert all("resumed from its last checkpoint" in line for line in finished)  # the workers did die
            for rid in ids:
                a, b = ResultsStore(local).get_run(rid), ResultsStore(out).get_run(rid)
                assert b is not None and a["test_error"] == b["test_error"]
                assert a["metrics"]["history"] == b["metrics"]["history"]  # both epochs, the second after a retry
                wa = torch.load(local / "runs" / rid / "checkpoint.pt", weights_only=False)["model"]
                wb = torch.load(out / "runs" / rid / "checkpoint.pt", weights_only=False)["model"]
                assert all(torch.equal(wa[k], wb[k]) for k in wa), (rid, copy_back)
    finally:
        ray.shutdown()


def test_log_lines_name_the_method_options_that_tell_two_rows_apart():
    from mixlab.train.runs import default_label

    plain = TrainConfig(method="amp+sentmixup", seed=2, protocol="amp-trec-cnn-quick")
    shared = dataclasses.replace(plain, method_kwargs={"shared_dropout": True})
    assert default_label(plain, 1, 4) == "  [1/4] amp-trec-cnn-quick amp+sentmixup seed 2"
    assert default_label(shared, 2, 4) == "  [2/4] amp-trec-cnn-quick amp+sentmixup (shared_dropout=true) seed 2"
