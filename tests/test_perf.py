"""``mixlab perf``: structure of the report and the pieces it measures with (no timing assertions)."""
import json
import os
from pathlib import Path

import pytest
import torch

import mixlab
from mixlab.cli import main
from mixlab.bench.perf import GOAL_METHODS, Bench, Builder, goal_for, plain_loop_epoch
from mixlab.cli.perf import method_kwargs

FIELDS = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.25}, subset_per_class=10, batch_size=16,
              crop_padding=0, flip=False, lr=0.01, epochs=1, test_limit=1)


def test_perf_command_reports_every_method(tmp_path, capsys):
    rc = main(["perf", "--methods", "erm,mixup,manifold", "--model-arg", "width=0.25", "--subset-per-class", "10",
               "--batch-size", "16", "--repeats", "2", "--warmup", "1", "--engine-vs-loop", "--epochs-timed",
               "1", "--json", "--threads", "1", "--no-ot"])
    assert rc == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["methods"]) == {"erm", "mixup", "manifold"}
    for name, row in report["methods"].items():
        assert row["step_ms"] > 0 and row["erm_step_ms"] > 0 and row["step_ratio"] > 0, name
        assert row["memory_kind"] == "saved" and row["memory_mb"] > 0
    assert report["methods"]["mixup"]["input_mixer"] and report["methods"]["mixup"]["target"] == 1.05
    assert report["methods"]["manifold"]["mix_kind"] == "forward - ERM forward"
    e = report["engine_vs_loop"]
    assert e["engine_samples_per_second"] > 0 and e["loop_samples_per_second"] > 0 and e["engine_channels_last"]
    assert e["engine_speedup_range"][0] <= e["engine_speedup"] <= e["engine_speedup_range"][1]
    assert "mixup" in out and "x ERM" in out  # the table
    assert "engine / plain batched loop" in out and "goal > 1" in out


def test_every_registered_method_gets_a_row_or_a_reason(capsys):
    from mixlab.registry import METHODS

    main(["perf", "--model-arg", "width=0.25", "--subset-per-class", "10", "--batch-size", "16", "--repeats", "1",
          "--warmup", "0", "--no-ot", "--json", "--threads", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["methods"]) == set(METHODS.names())
    for name, row in report["methods"].items():
        assert "step_ratio" in row or row["error"], name


def test_perf_adapter_pairs_the_adapted_and_the_staged_model(capsys):
    rc = main(["perf", "--adapter", "--model-arg", "width=4", "--methods", "erm,amp+sentmixup",
               "--subset-per-class", "10", "--batch-size", "16", "--repeats", "2", "--warmup", "1", "--json",
               "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["model"] == "preactresnet18" and set(report["adapter"]) == {"erm", "amp+sentmixup"}
    for name, row in report["adapter"].items():
        assert row["adapter_step_ms"] > 0 and row["staged_step_ms"] > 0 and row["ratio"] > 0, name
        assert row["target"] == 1.02
    assert "adapter ms" in out and report["dispatch"]["adapter_us"] > 0 and "paired difference" in out
    from mixlab.bench.perf import adapted, stage_methods

    assert {"manifold", "alignmix", "multimix", "dense-multimix", "amp+sentmixup"} <= set(stage_methods())
    staged = mixlab.create_model("preactresnet18", num_classes=3, width=4).eval()
    x = torch.randn(2, 3, 16, 16)
    net = adapted(staged)
    with torch.no_grad():
        torch.testing.assert_close(net.head(net.pool(net.forward_features(x))), staged(x))
    assert {id(p) for p in net.parameters()} == {id(p) for p in staged.parameters()}


def test_bench_step_is_the_engine_step_and_memory_scales_with_batch(tmp_path):
    builder = Builder(FIELDS, str(tmp_path))
    small, large = Bench(builder.trainer("erm"), 8), Bench(builder.trainer("erm"), 16)
    assert builder.shared is not None and small.trainer.x_train is large.trainer.x_train  # data loaded once
    assert "load_data" not in vars(small.trainer)  # through the engine's hook in a subclass, not a patched instance
    before = [p.detach().clone() for p in small.trainer.model.parameters()]
    small.step()
    assert any(not torch.equal(p, q) for p, q in zip(small.trainer.model.parameters(), before))
    m_small, kind = small.memory_mb()
    m_large, _ = large.memory_mb()
    assert kind == "saved" and 1.5 < m_large / m_small < 2.5  # activations grow with the batch


def test_plain_loop_trains_on_the_engines_batches(tmp_path):
    builder = Builder(FIELDS, str(tmp_path))
    trainer = builder.trainer("erm")
    seen = []
    model = trainer.build_model()
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    plain_loop_epoch(model, optimizer, trainer.x_train, trainer.y_train, trainer.augment, 16,
                     torch.Generator().manual_seed(3))
    # what the engine's train_batch makes of the same order and generator, batch by batch
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(trainer.x_train.shape[0], generator=g)
    expected = [trainer.train_batch(order[i:i + 16], g) for i in range(0, len(order), 16) if len(order[i:i + 16]) > 1]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert not seen[0].is_contiguous(memory_format=torch.channels_last) or seen[0].shape[1] == 1  # NCHW, as users do
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_goals_name_their_baselines():
    assert goal_for("amp+mixup") == (2.1, "base_ratio") and goal_for("opttransmix") == (1.05, "per_sample_ratio")
    assert goal_for("transformmix") == (1.3, "step_ratio") and goal_for("multimix") == (1.3, "step_ratio")
    assert goal_for("erm") is None and GOAL_METHODS["multimix"] == {"n": 5000}


def test_method_arg_parsing():
    assert method_kwargs(["multimix:n=1000", "mixup:alpha=0.2", "multimix:dense=true"]) == {
        "multimix": {"n": 1000, "dense": True}, "mixup": {"alpha": 0.2}}
    with pytest.raises(ValueError, match="METHOD:KEY=VALUE"):
        method_kwargs(["alpha=0.2"])


def test_bench_ot_compares_with_pot_on_mnist_pairs(data_root, capsys):
    pytest.importorskip("ot")
    assert main(["bench-ot", "--data-dir", str(data_root), "--pairs", "4", "--repeats", "2", "--steps", "0",
                 "--sinkhorn-sizes", "4,9", "--sinkhorn-batch", "3", "--sinkhorn-channels", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = out["barycenter"]
    assert out["machine"]["torch_threads"] >= 1 and out["machine"]["cores"] >= 1
    for size, v in out["sinkhorn"]["sizes"].items():  # ours against the authors' algorithm, same costs
        assert int(size) in (4, 9) and len(v["speedup_per_repeat"]) == 2 and v["max_abs_plan_diff"] < 1e-3
        assert v["speedup_min"] <= v["speedup"] <= v["speedup_max"]
    assert r["pairs"] == 4 and len(r["pot_seconds_all"]) == len(r["ours_seconds_all"]) == 2
    assert r["l1_max"] < 1e-3 and 10 < r["iterations_mean"] < r["pot_iterations_mean"]
    assert 0 < r["pot_l1_mean"] <= r["pot_l1_max"] < 1e-2  # POT at its default stopThr is near, not at, convergence
    assert r["iterations_exact_mean"] >= 1 and r["speedup"] > 0
    from mixlab.ot import native
    assert r["backend"] == ("native" if native.available() else "torch")
    if r["backend"] == "native":  # the PyTorch iteration timed in the same runs, as accurate
        assert len(r["torch_backend_seconds_all"]) == 2 and r["torch_backend_l1_max"] < 1e-3


def test_perf_trainers_keep_the_threads_asked_for(tmp_path):
    """--threads reaches the trainers' configs: their setup sets the run's threads (a ResNet's default is every
    core), which would otherwise change the thread count in the middle of a one-thread measurement."""
    import argparse

    from mixlab.cli.perf import base_fields
    from mixlab.cli.train import GPU_FLAGS

    args = argparse.Namespace(protocol=None, dataset=None, model="preactresnet18", subset_per_class=4, batch_size=8,
                              model_arg=["width=4"], device="cpu", threads=1, **{f: None for f in GPU_FLAGS})
    fields = base_fields(args)
    assert fields["threads"] == 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Builder(fields, str(tmp_path)).trainer("erm")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("script", sorted(p.name for p in (Path(__file__).parents[1] / "benchmarks").glob("*.py")))
def test_benchmark_scripts_import_and_parse(script):
    """The stand-alone scripts in benchmarks/ still import what they use from mixlab (``--help`` parses after the
    imports): a moved module breaks them loudly here, not for the next person who runs one."""
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, str(root / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout
