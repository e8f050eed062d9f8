"""Distributed data-parallel training: 2 CPU processes under torchrun (gloo), and the single-process helpers."""
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from mixlab.train import TrainConfig, Trainer
from mixlab.distributed import gather_global, local_rows, shard_indices

REPO = Path(__file__).resolve().parents[1]


def torchrun(args, out_dir, nproc=2, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    proc = subprocess.run(cmd, cwd=out_dir, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun([str(REPO / "tests" / "ddp_worker.py"), str(out)], out)
    done = json.loads((out / "done.json").read_text())
    assert done["world"] == 2

    def load(name):
        return [torch.load(out / f"{name}_r{r}.pt", weights_only=False) for r in (0, 1)]

    load.methods = done["methods"]
    return load


def test_parameters_identical_across_ranks_for_every_method(worker):
    assert {"erm", "mixup", "cutmix", "manifold"} <= set(worker.methods)  # input and feature mixers
    for method in worker.methods:
        r0, r1 = worker(f"method_{method}")
        moved = max(float((r0["params"][k] - r0["init"][k]).abs().max()) for k in r0["params"])
        assert moved > 1e-3, f"{method}: training did not change the parameters"
        for k in r0["params"]:  # the ranks saw different shards: only synchronised gradients keep them equal
            assert torch.equal(r0["params"][k], r1["params"][k]), f"{method}: {k} differs across ranks"
        assert r0["result"] == r1["result"] and r0["result"]["world_size"] == 2


def test_global_batch_multimix_mixes_over_both_ranks(worker):
    if "multimix" not in worker.methods:
        pytest.skip("multimix is not registered")
    r0, r1 = worker("global_multimix")
    assert r0["weights_rows"] == 2 * r0["batch"]  # Lambda spans the global batch (world x b examples)
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k


def test_global_batch_dense_multimix_mixes_over_both_ranks(worker):
    from mixlab.registry import METHODS

    if "dense-multimix" not in METHODS:
        pytest.skip("dense-multimix is not registered")
    r0, r1 = worker("global_dense")
    for r in (r0, r1):
        assert r["weights_shape"] == (25, 8, 6)  # Lambda^j over the global batch: 2 ranks x 4 examples
        assert r["engine_weights_rows"] == 2 * r["batch"]
        # each rank's loss is its own draw of mixtures over the concatenated global batch ...
        assert abs(r["loss"] - r["ref_loss"]) < 1e-5
        # ... and the DDP-averaged gradient is that of the mean of both ranks' global losses
        for g, ref in zip(r["grads"], r["ref_grads"]):
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    assert r0["loss"] != r1["loss"]  # per-rank random streams
    for k in r0["engine_params"]:
        assert torch.equal(r0["engine_params"][k], r1["engine_params"][k]), k


def test_global_batch_gather_sees_other_rank_and_routes_gradients(worker):
    for rank, g in enumerate(worker("gather")):
        # every rank sees both ranks' embeddings, in rank order; its own rows are its own
        torch.testing.assert_close(g["seen"], g["expected_seen"])
        assert g["seen"].shape[0] == 8 and not torch.equal(g["seen"][:4], g["seen"][4:])
        # the DDP gradient equals a single process's gradient of the mean loss over the global batch ...
        torch.testing.assert_close(g["grad"], g["ref_grad"], rtol=1e-5, atol=1e-6)
        # ... which gradients stopped at the rank boundary would not give
        assert float((g["naive_grad"] - g["ref_grad"]).abs().max()) > 1e-2


def test_resume_under_ddp_replays_the_uninterrupted_run(worker):
    states = worker("resume")
    for s in states:
        assert s["start_epoch"] == 1
        for k in s["whole"]:
            assert torch.equal(s["whole"][k], s["resumed"][k]), k
        assert s["whole_error"] == s["resumed_error"]
    for k in states[0]["whole"]:  # buffers are synchronised at epoch ends: every rank holds the same state
        assert torch.equal(states[0]["whole"][k], states[1]["whole"][k]), k


def test_cli_train_under_torchrun_writes_one_row(tmp_path):
    args = ["-m", "mixlab", "train", "--dataset", "digits", "--model-arg", "width=0.25", "--epochs", "1",
            "--method", "mixup", "--out", str(tmp_path / "o"), "--json", "--no-progress", "--threads", "1"]
    proc = torchrun(args, tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # rank 0 reports
    db = sqlite3.connect(tmp_path / "o" / "results.db")
    rows = db.execute("SELECT run_id, config, metrics FROM runs").fetchall()
    assert len(rows) == 1 and rows[0][0] == json.loads(lines[0])["run_id"]
    assert json.loads(rows[0][1])["world_size"] == 2 and json.loads(rows[0][2])["world_size"] == 2
    assert (tmp_path / "o" / "runs" / rows[0][0] / "checkpoint.pt").exists()
    single = TrainConfig(method="mixup", dataset="digits", epochs=1, model_kwargs={"width": 0.25})
    assert single.run_id() != rows[0][0]  # a 2-process run is another run


# ---------------------------------------------------------------------------------------- single process
@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (13, 4), (5, 1)])
def test_shard_indices_match_distributed_sampler(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shards = [shard_indices(order, r, world) for r in range(world)]
    for r in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False)
        assert shards[r].tolist() == [int(order[i]) for i in sampler]
    assert len({s.numel() for s in shards}) == 1  # equal shards: every rank takes the same number of steps
    assert set(torch.cat(shards).tolist()) == set(range(n))


def test_gather_global_is_identity_in_one_process():
    z = torch.randn(4, 3, requires_grad=True)
    assert gather_global(z) is z
    assert local_rows(4) == slice(0, 4)


def test_new_config_fields_keep_default_run_ids():
    c = TrainConfig(channels_last=False)
    assert not {"channels_last", "bf16", "compile", "world_size"} & set(c.identity())
    ids = {TrainConfig(**{flag: True}).run_id() for flag in ("bf16", "compile")}
    assert len(ids | {c.run_id(), TrainConfig(channels_last=True).run_id()}) == 4


def test_channels_last_by_default_for_images_only_and_named_in_the_run_id():
    image, text = TrainConfig(dataset="mnist"), TrainConfig(dataset="trec", model="kim-cnn")
    assert image.channels_last is True and image.identity()["channels_last"] is True  # set on construction
    assert image == TrainConfig(dataset="mnist", channels_last=True)
    assert image.run_id() != TrainConfig(dataset="mnist", channels_last=False).run_id()
    assert text.channels_last is False and "channels_last" not in text.identity()  # text run ids unchanged
    assert TrainConfig(dataset="fmnist").channels_last and not TrainConfig(dataset="miml").channels_last
    # a run stored before the default (no key): NCHW, and its id is rebuilt unchanged
    old = TrainConfig(dataset="mnist", channels_last=False).identity()
    assert TrainConfig.from_identity(old).run_id() == TrainConfig(dataset="mnist", channels_last=False).run_id()
    assert TrainConfig.from_identity(image.identity()).run_id() == image.run_id()


def test_world_size_mismatch_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node 2"):
        Trainer(TrainConfig(world_size=2), store=False)
