"""The GPU-path switches, checked on CPU: channels_last, bf16 autocast, torch.compile, no host syncs."""
import os

import pytest
import torch

from mixlab.train import TrainConfig, Trainer
from mixlab.train.engine import compile_model

SMALL = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.25}, subset_per_class=16, epochs=1,
             batch_size=32, lr=0.05, crop_padding=1, flip=True, test_limit=100)


def train(tmp_path, **fields):
    trainer = Trainer(TrainConfig(**{**SMALL, **fields}), out=tmp_path, store=False, progress=False)
    result = trainer.run()
    return trainer, result


def losses(result):
    return torch.tensor([h["train_loss"] for h in result["history"]])


def max_param_diff(a, b):
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters()))


@pytest.mark.parametrize("method", ["manifold"])  # the staged path; input mixers use the same model call
def test_channels_last_trains_like_the_fp32_path(tmp_path, method):
    ref, r_ref = train(tmp_path / "a", method=method, channels_last=False)
    nhwc, r_nhwc = train(tmp_path / "b", method=method)  # the default for image data
    conv = nhwc.model.stages[1][0].weight  # (the first conv has one input channel: both layouts at once)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    # same computation in another memory layout (oneDNN's NHWC kernels round differently)
    torch.testing.assert_close(losses(r_nhwc), losses(r_ref), rtol=1e-3, atol=1e-4)
    assert max_param_diff(ref, nhwc) < 5e-3
    assert r_nhwc["run_id"] != r_ref["run_id"]
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in ref.model.parameters())  # channels_last=False: NCHW throughout


def test_bf16_autocast_runs_forward_in_bf16_and_keeps_fp32_weights(tmp_path):
    dtypes = []
    trainer = Trainer(TrainConfig(**SMALL, method="mixup", bf16=True), out=tmp_path, store=False, progress=False)
    trainer.setup()
    trainer.model.stages[0][0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    loss = trainer.train_epoch(0)
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert torch.isfinite(loss) and loss.dtype == torch.float32  # the loss is computed in fp32
    _, ref = train(tmp_path / "ref", method="mixup")
    assert abs(float(loss) - ref["history"][0]["train_loss"]) < 0.05 * ref["history"][0]["train_loss"]


def test_compile_model_keeps_the_staged_interface():
    torch.manual_seed(0)
    from mixlab.registry import MODELS

    model = MODELS.create("cnn11", num_classes=10, in_channels=1, image_size=8, width=0.25).eval()
    x = torch.randn(4, 1, 8, 8)
    keys = list(model.state_dict())
    expected = model(x)
    compile_model(model, backend="eager")
    assert list(model.state_dict()) == keys
    assert all(stage._compiled_call_impl is not None for stage in model.stages)
    assert model.head._compiled_call_impl is not None
    h = model.forward_features(x, 0, 1)  # staged calls go through compiled stages
    torch.testing.assert_close(model.head(model.pool(model.forward_features(h, 1))), expected)


def test_compile_flag_trains_like_eager(tmp_path, monkeypatch):
    # the flag's wiring, with dynamo's eager backend: inductor's code generation takes 10-30 s per model on
    # this shared CPU (it passes: run with MIXLAB_TEST_INDUCTOR=1); the GPU path uses inductor
    import functools

    import mixlab.train.engine as engine

    if not os.environ.get("MIXLAB_TEST_INDUCTOR"):
        monkeypatch.setattr(engine, "compile_model", functools.partial(compile_model, backend="eager"))
    eager, r_eager = train(tmp_path / "a", method="mixup")
    compiled, r_comp = train(tmp_path / "b", method="mixup", compile=True)
    torch.testing.assert_close(losses(r_comp), losses(r_eager), rtol=1e-3, atol=1e-4)
    assert max_param_diff(eager, compiled) < 1e-3
    assert all(stage._compiled_call_impl is not None for stage in compiled.model.stages)


@pytest.mark.parametrize("method", ["erm", "mixup"])
def test_hot_loop_never_waits_on_the_device(tmp_path, monkeypatch, method):
    """Every Python-level tensor->host read (.item, bool, float, int, tolist) raises inside train_epoch.

    On CPU this cannot tell a device read from a CPU one, so it runs methods that draw only tensors (Manifold
    Mixup reads its stage index from its CPU generator, which is no device sync).
    """
    trainer = Trainer(TrainConfig(**SMALL, method=method), out=tmp_path, store=False, progress=False)
    trainer.setup()
    calls = []

    def forbid(name):
        def sync(self, *args):
            calls.append(name)
            raise AssertionError(f"host sync: Tensor.{name} in the training loop")
        return sync

    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    try:
        loss = trainer.train_epoch(0)
    finally:
        monkeypatch.undo()
    assert not calls
    assert torch.isfinite(loss)

