"""Staged models: shapes, stage composition, embeddings, CAMs."""
import pytest
import torch

import mixlab

CASES = [("cnn11", dict(in_channels=1, image_size=28, width=0.25), (2, 1, 28, 28)),
         ("cnn11", dict(in_channels=3, image_size=32, width=0.25), (2, 3, 32, 32)),
         ("preactresnet18", dict(in_channels=3, width=8), (2, 3, 32, 32)),
         ("preactresnet18", dict(in_channels=1, width=8, stem_bn=True), (2, 1, 28, 28)),
         ("resnet18", dict(in_channels=3, width=8), (2, 3, 32, 32)),
         ("wrn28-10", dict(in_channels=3, widen=1), (2, 3, 32, 32))]


@pytest.mark.parametrize("name,kwargs,shape", CASES)
def test_stages_compose_to_forward(name, kwargs, shape):
    torch.manual_seed(0)
    model = mixlab.create_model(name, num_classes=7, **kwargs).eval()
    x = torch.randn(shape)
    logits = model(x)
    assert logits.shape == (2, 7)
    h = x
    for k in range(model.num_stages):
        h = model.forward_features(h, k, k + 1)
    torch.testing.assert_close(model.head(model.pool(h)), logits)
    fmap = model.forward_features(x)
    assert fmap.dim() == 4
    assert model.embed(x).shape == (2, model.embedding_dim)
    assert max(model.mix_stages) < model.num_stages
    cam = model.cam(fmap, torch.tensor([0, 3]))
    assert cam.shape == (2, fmap.shape[2], fmap.shape[3]) and not cam.requires_grad


def test_preact_widths_and_feature_map():
    model = mixlab.create_model("preactresnet18", num_classes=10)
    fmap = model.forward_features(torch.randn(1, 3, 32, 32))
    assert fmap.shape == (1, 512, 4, 4)
    n = sum(p.numel() for p in model.parameters())
    assert 11.0e6 < n < 11.3e6  # PreActResNet-18 has about 11.17 M parameters


def test_wrn28_10_size():
    model = mixlab.create_model("wrn28-10", num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    assert 36.0e6 < n < 36.6e6  # WRN-28-10 has about 36.5 M parameters


def test_cnn11_layers():
    model = mixlab.create_model("cnn11", num_classes=10, in_channels=1, image_size=28)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 256]
    assert len(fcs) == 3 and fcs[-1].out_features == 10
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(1, 1, 32, 32))


def test_exact_cam_matches_position_logits():
    model = mixlab.create_model("preactresnet18", num_classes=5, width=8).eval()
    fmap = model.forward_features(torch.randn(2, 3, 32, 32))
    cam = model.cam(fmap, torch.tensor([1, 4]))
    pos = model.position_logits(fmap)  # (B, hw, classes) includes the bias
    bias = model.head.bias[torch.tensor([1, 4])]
    torch.testing.assert_close(cam.flatten(1), pos[torch.arange(2), :, torch.tensor([1, 4])] - bias[:, None])


def test_manifold_mixup_gradients_reach_all_stages():
    model = mixlab.create_model("preactresnet18", num_classes=4, width=8)
    method = mixlab.create("manifold", num_classes=4, seed=1)
    x = torch.randn(6, 3, 32, 32)
    t = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    loss = method.training_loss(model, x, t)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_manifold_mixup_matches_input_mixup_at_stage_zero():
    model = mixlab.create_model("cnn11", num_classes=4, in_channels=1, image_size=28, width=0.25).eval()
    method = mixlab.create("manifold", layers=(0,), num_classes=4, seed=5)
    x = torch.randn(6, 1, 28, 28)
    t = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    k, lam, perm = method.sample(6, (0,))
    logits, t_mix = method.mixed_forward(model, x, t, k, lam, perm)
    torch.testing.assert_close(logits, model(lam * x + (1 - lam) * x[perm]))
    with pytest.raises(ValueError, match="out of range"):
        mixlab.create("manifold", layers=(9,), num_classes=4).training_loss(model, x, t)
