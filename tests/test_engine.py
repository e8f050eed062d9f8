"""Engine: determinism, resume equality, results store, schedules."""
import dataclasses
import json
import sqlite3

import pytest
import torch

from mixlab.results import ResultsStore, summarize
from mixlab.train import TrainConfig, Trainer
from mixlab.train.engine import lr_factor

SMALL = dict(dataset="digits", model="cnn11", epochs=3, batch_size=64, lr=0.05, milestones=(2,),
             model_kwargs={"width": 0.25}, crop_padding=1, flip=False)


def state_of(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("method", ["mixup", "cutmix", "manifold"])
def test_same_seed_same_numbers(tmp_path, method):
    a = Trainer(TrainConfig(method=method, **SMALL), out=tmp_path / "a", progress=False).run()
    b = Trainer(TrainConfig(method=method, **SMALL), out=tmp_path / "b", progress=False).run()
    assert a["test_error"] == b["test_error"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    c = Trainer(TrainConfig(method=method, seed=1, **SMALL), out=tmp_path / "c", progress=False).run()
    assert [h["train_loss"] for h in c["history"]] != [h["train_loss"] for h in a["history"]]


def test_resume_equals_uninterrupted(tmp_path):
    config = TrainConfig(method="mixup", **SMALL)
    full = Trainer(config, out=tmp_path / "full", progress=False)
    full_result = full.run()

    # run 1 epoch "then get killed": a config with the same identity, stopped after one epoch
    part = Trainer(config, out=tmp_path / "part", progress=False, store=False)
    part.setup()
    part.train_epoch(0)
    part.history.append({"epoch": 1, "train_loss": None})
    part.save_checkpoint(0)
    resumed = Trainer(config, out=tmp_path / "part", progress=False)
    result = resumed.run(resume=True)
    assert resumed.start_epoch == 1
    for k, v in state_of(full).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert result["test_error"] == full_result["test_error"]


def test_a_run_being_trained_elsewhere_is_locked_and_a_killed_holders_lock_is_free(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from mixlab.train import RunLocked
    from mixlab.locks import run_lock

    config = TrainConfig(method="erm", **{**SMALL, "epochs": 1})
    trainer = Trainer(config, out=tmp_path, progress=False)
    lock = trainer.run_dir / "lock"
    with run_lock(trainer.run_dir):  # this process is "training" the run
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLocked, match="another process"):
            trainer.run()
    assert not lock.exists()
    # another process holds the run, then is killed (no clean-up): its lock file stays behind, but unlocked
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from mixlab.locks import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)", str(trainer.run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} "):
            trainer.run()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists()
    assert trainer.run()["epochs"] == 1 and not lock.exists()
    lock.write_text("not json, and no holder")  # leftovers of any content do not hold a run
    assert trainer.run()["epochs"] == 1 and not lock.exists()


def test_checkpoint_from_other_config_refused(tmp_path):
    first = Trainer(TrainConfig(method="erm", **SMALL), out=tmp_path, progress=False)
    first.run()
    other = Trainer(TrainConfig(method="erm", **{**SMALL, "lr": 0.01}), out=tmp_path, progress=False)
    other.run_dir = first.run_dir  # point it at the first run's checkpoint
    other.setup()
    with pytest.raises(RuntimeError, match="another configuration"):
        other.load_checkpoint()


def test_results_store_rows_and_summary(tmp_path):
    for seed in (0, 1):
        Trainer(TrainConfig(method="erm", seed=seed, **SMALL), out=tmp_path, progress=False).run()
    store = ResultsStore(tmp_path)
    runs = store.runs(method="erm")
    assert len(runs) == 2 and {r["seed"] for r in runs} == {0, 1}
    assert runs[0]["versions"]["torch"] == torch.__version__
    assert runs[0]["config"]["lr"] == 0.05 and runs[0]["metrics"]["history"]
    (row,) = summarize(runs, keys=("method",))
    errors = [r["test_error"] for r in runs]
    assert row["trials"] == 2 and row["mean_error"] == pytest.approx(sum(errors) / 2)
    assert row["std_error"] == pytest.approx(abs(errors[0] - errors[1]) / 2 ** 0.5)
    with sqlite3.connect(tmp_path / "results.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    # a run of another configuration in the same store is its own row, labelled by what differs
    changed = {**runs[0], "seed": 2, "test_error": 99.0, "config": {**runs[0]["config"], "seed": 2, "lr": 0.5}}
    rows = summarize(runs + [changed], keys=("method",))
    assert [(r["trials"], r["variant"]) for r in rows] == [(2, "lr=0.05"), (1, "lr=0.5")]


def test_lr_schedules():
    c = TrainConfig(epochs=100, milestones=(50, 75))
    assert [lr_factor(c, e) for e in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    c = TrainConfig(epochs=10, schedule="cosine")
    assert lr_factor(c, 0) == 1 and lr_factor(c, 5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(TrainConfig(schedule="step"), 0)


def test_bad_configs_are_clear(tmp_path):
    with pytest.raises(KeyError, match="unknown model 'cnn12'"):
        Trainer(TrainConfig(model="cnn12"), out=tmp_path)
    with pytest.raises(KeyError, match="unknown dataset"):
        Trainer(TrainConfig(dataset="imagenet"), out=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        Trainer(TrainConfig(batch_size=1), out=tmp_path)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        Trainer(TrainConfig(method="mixup", method_kwargs={"alpha": 0}, **{**SMALL, "epochs": 1}), out=tmp_path,
                progress=False).run()


def test_learning_happens(tmp_path):
    r = Trainer(TrainConfig(method="erm", **{**SMALL, "epochs": 6, "milestones": (5,)}), out=tmp_path,
                progress=False).run()
    assert r["test_error"] < 30  # 10 classes: chance is 90 %
    assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]


def test_grad_clip_bounds_the_update_and_keeps_default_run_ids(tmp_path):
    config = TrainConfig(method="mixup", **{**SMALL, "epochs": 1, "momentum": 0.0, "weight_decay": 0.0})
    assert "grad_clip" not in config.identity()  # run ids of unclipped runs are unchanged
    clipped = TrainConfig(**{**dataclasses.asdict(config), "grad_clip": 1e-3})
    assert clipped.run_id() != config.run_id()
    trainer = Trainer(clipped, out=tmp_path, progress=False)
    trainer.setup()
    before = torch.cat([p.detach().flatten().clone() for p in trainer.model.parameters()])
    x, t = trainer.train_batch(torch.arange(64), torch.Generator().manual_seed(0)), trainer.t_train[:64]
    trainer.optimizer_step(trainer.step_loss(x, t))
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    # plain SGD: the step is lr x the clipped gradient, whose norm is at most grad_clip
    assert 0 < float((after - before).norm()) <= 0.05 * 1e-3 * (1 + 1e-4)


def test_holdout_is_disjoint_from_training_images_and_shared_by_trials(tmp_path):
    from mixlab.data import load_dataset
    from mixlab.data.subsets import per_class_indices
    from mixlab.train.engine import split_holdout

    full = load_dataset("digits", "train")
    keys = lambda data: {bytes(row) for row in data.x.flatten(1).numpy()}
    taken = [per_class_indices(full.y, 20, seed=s) for s in (0, 1)]
    holdouts = [split_holdout(full, 10, t)[0] for t in taken]
    for t, h in zip(taken, holdouts):
        assert torch.bincount(h.y, minlength=10).tolist() == [10] * 10
        assert not keys(h) & keys(full.subset(t))
    # mostly the same images: here each subset claims 20 of about 130 images per class (MNIST: 50 of 6,000)
    assert len(keys(holdouts[0]) & keys(holdouts[1])) >= 60
    rest_holdout, rest = split_holdout(full, 10)
    assert len(rest.y) + len(rest_holdout.y) == len(full.y) and not keys(rest) & keys(rest_holdout)
    with pytest.raises(ValueError, match="holdout_per_class"):
        split_holdout(full, 10_000)
    config = TrainConfig(method="erm", **{**SMALL, "epochs": 1}, subset_per_class=20, holdout_per_class=10)
    result = Trainer(config, out=tmp_path, progress=False).run()
    assert result["test_set"].startswith("validation") and result["test_size"] == 100
    assert config.run_id() != TrainConfig(method="erm", **{**SMALL, "epochs": 1}, subset_per_class=20).run_id()


def test_a_methods_revision_changes_its_run_ids_only(monkeypatch):
    from mixlab.methods.mixup import Mixup

    config = TrainConfig(method="mixup", **SMALL)
    other = TrainConfig(method="cutmix", **SMALL)
    before, other_before = config.run_id(), other.run_id()
    monkeypatch.setattr(Mixup, "revision", 1)  # a default of mixup changed
    assert config.run_id() != before and other.run_id() == other_before
    assert config.identity()["method_revision"] == 1
    assert TrainConfig.from_identity(config.identity()).run_id() == config.run_id()


def test_run_lock_does_not_hold_a_file_its_previous_holder_removed_meanwhile(tmp_path, monkeypatch):
    import fcntl
    import os

    from mixlab.locks import run_lock

    real_flock, calls = fcntl.flock, []

    def flock_then_vanish(fd, op):  # the previous holder finishes between our open and our flock
        real_flock(fd, op)
        calls.append(fd)
        if len(calls) == 1:
            (tmp_path / "lock").unlink()

    monkeypatch.setattr(fcntl, "flock", flock_then_vanish)
    with run_lock(tmp_path):
        assert len(calls) == 2  # the vanished file was let go, the new one is held
        assert os.fstat(calls[-1]).st_ino == os.stat(tmp_path / "lock").st_ino
    assert not (tmp_path / "lock").exists()


def test_a_run_that_fails_before_writing_leaves_no_run_folder(tmp_path):
    """A missing dataset used to leave an empty ``runs/<id>/`` behind, which looked like a started run."""
    from mixlab.data import DatasetFileError

    config = TrainConfig(method="erm", **{**SMALL, "dataset": "mnist", "epochs": 1})
    trainer = Trainer(config, out=tmp_path / "out", data_dir=tmp_path / "empty-data-root", progress=False)
    (tmp_path / "empty-data-root").mkdir()
    with pytest.raises(DatasetFileError, match="missing"):
        trainer.run()
    assert not trainer.run_dir.exists() and not any((tmp_path / "out" / "runs").glob("*"))
