"""``mixlab perf``: structure of the report and the pieces it measures with (no timing assertions)."""
import json

import pytest
import torch

from mixlab.cli import main
from mixlab.cli.perf import Bench, Builder, method_kwargs, per_sample_dataset

FIELDS = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.25}, subset_per_class=10, batch_size=16,
              crop_padding=0, flip=False, lr=0.01, epochs=1, test_limit=1)


def test_perf_command_reports_every_method(tmp_path, capsys):
    rc = main(["perf", "--methods", "erm,mixup,manifold", "--model-arg", "width=0.25", "--subset-per-class", "10",
               "--batch-size", "16", "--repeats", "2", "--warmup", "1", "--engine-vs-dataloader", "--epochs-timed",
               "1", "--json", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["methods"]) == {"erm", "mixup", "manifold"}
    for name, row in report["methods"].items():
        assert row["step_ms"] > 0 and row["erm_step_ms"] > 0 and row["step_ratio"] > 0, name
        assert row["memory_kind"] == "saved" and row["memory_mb"] > 0
    assert report["methods"]["mixup"]["input_mixer"] and report["methods"]["mixup"]["target"] == 1.05
    assert report["methods"]["manifold"]["mix_kind"] == "forward - ERM forward"
    assert "ot" in report and "engine_vs_dataloader" in report
    assert report["engine_vs_dataloader"]["engine_samples_per_second"] > 0
    assert "mixup" in out and "x ERM" in out  # the table


def test_every_registered_method_gets_a_row_or_a_reason(capsys):
    from mixlab.registry import METHODS

    main(["perf", "--model-arg", "width=0.25", "--subset-per-class", "10", "--batch-size", "16", "--repeats", "1",
          "--warmup", "0", "--no-ot", "--json", "--threads", "1"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["methods"]) == set(METHODS.names())
    for name, row in report["methods"].items():
        assert "step_ratio" in row or row["error"], name


def test_bench_step_is_the_engine_step_and_memory_scales_with_batch(tmp_path):
    builder = Builder(FIELDS, str(tmp_path))
    small, large = Bench(builder.trainer("erm"), 8), Bench(builder.trainer("erm"), 16)
    assert builder.shared is not None and small.trainer.x_train is large.trainer.x_train  # data loaded once
    before = [p.detach().clone() for p in small.trainer.model.parameters()]
    small.step()
    assert any(not torch.equal(p, q) for p, q in zip(small.trainer.model.parameters(), before))
    m_small, kind = small.memory_mb()
    m_large, _ = large.memory_mb()
    assert kind == "saved" and 1.5 < m_large / m_small < 2.5  # activations grow with the batch


def test_dataloader_baseline_sees_the_same_images_as_the_engine(tmp_path):
    builder = Builder(FIELDS, str(tmp_path))
    trainer = builder.trainer("erm")
    ds = per_sample_dataset(trainer.train_data, padding=0, flip=False)
    idx = torch.arange(5)
    expected = trainer.augment(trainer.x_train[idx], None, train=False)
    got = torch.stack([ds[i][0] for i in range(5)])
    torch.testing.assert_close(got, expected)
    assert [int(ds[i][1]) for i in range(5)] == trainer.y_train[:5].tolist()
    cropped = per_sample_dataset(trainer.train_data, padding=2, flip=True)[0][0]
    assert cropped.shape == expected[0].shape


def test_method_arg_parsing():
    assert method_kwargs(["multimix:n=1000", "mixup:alpha=0.2", "multimix:dense=true"]) == {
        "multimix": {"n": 1000, "dense": True}, "mixup": {"alpha": 0.2}}
    with pytest.raises(ValueError, match="METHOD:KEY=VALUE"):
        method_kwargs(["alpha=0.2"])


def test_bench_ot_compares_with_pot_on_mnist_pairs(data_root, capsys):
    pytest.importorskip("ot")
    assert main(["bench-ot", "--data-dir", str(data_root), "--pairs", "4", "--repeats", "2", "--steps", "0",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r = out["barycenter"]
    assert out["machine"]["torch_threads"] >= 1 and out["machine"]["cores"] >= 1
    assert r["pairs"] == 4 and len(r["pot_seconds_all"]) == len(r["ours_seconds_all"]) == 2
    assert r["l1_max"] < 1e-3 and 10 < r["iterations_mean"] < r["pot_iterations_mean"]
    assert 0 < r["pot_l1_mean"] <= r["pot_l1_max"] < 1e-2  # POT at its default stopThr is near, not at, convergence
    assert r["iterations_exact_mean"] >= 1 and r["speedup"] > 0
    from mixlab.ot import native
    assert r["backend"] == ("native" if native.available() else "torch")
    if r["backend"] == "native":  # the PyTorch iteration timed in the same runs, as accurate
        assert len(r["torch_backend_seconds_all"]) == 2 and r["torch_backend_l1_max"] < 1e-3
