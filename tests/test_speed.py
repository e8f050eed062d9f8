"""The speed work of issue 20 keeps every method's numbers: each faster path against a straightforward reference
kept here (the code as it was before), on fixed inputs."""
import math

import pytest
import torch

import mixlab
from mixlab.methods.alignmix import align
from mixlab.ot import sinkhorn, squared_distances


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------- sinkhorn
def reference_sinkhorn(x, y, eps, max_iter=100, tol=1e-6, check_every=10):
    """The log-domain iteration as first written: ``torch.logsumexp`` of ``(h - C) / eps`` every half-step."""
    c = squared_distances(x, y)
    b, r, s = c.shape
    f, g = x.new_zeros(b, r), x.new_zeros(b, s)
    for it in range(max_iter):
        f_prev = f
        f = eps * (-math.log(r) - torch.logsumexp((g[:, None, :] - c) / eps, dim=2))
        g = eps * (-math.log(s) - torch.logsumexp((f[:, :, None] - c) / eps, dim=1))
        if tol > 0 and (it + 1) % check_every == 0 and float((f - f_prev).abs().sum(-1).mean()) < tol:
            break
    return torch.exp((f[:, :, None] + g[:, None, :] - c) / eps)


def feature_points(b, r, s, channels, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, r, channels, generator=g, dtype=dtype).relu()  # BN-ReLU-like: the regime of AlignMixup
    return x, torch.randn(b, s, channels, generator=g, dtype=dtype).relu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,r,s,channels,eps,tol", [(4, 16, 16, 512, 0.1, 0.0), (2, 64, 64, 512, 0.1, 0.1),
                                                    (5, 9, 13, 4, 0.1, 0.1), (4, 16, 16, 8, 0.01, 0.0),
                                                    (3, 7, 7, 3, 1.0, 1e-6)])
def test_sinkhorn_plans_equal_the_reference(dtype, b, r, s, channels, eps, tol):
    x, y = feature_points(b, r, s, channels, dtype)
    ref = reference_sinkhorn(x, y, eps, tol=tol)
    plan = sinkhorn(x, y, eps, max_iter=100, tol=tol)
    assert plan.dtype == dtype
    torch.testing.assert_close(plan, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(plan * r, ref * r, atol=1e-6, rtol=0)  # R = r P, what AlignMixup uses
    if channels >= 512 and dtype == torch.float32:  # the regime of the slow exp path: most entries below exp(-87)
        assert float((ref < torch.finfo(dtype).tiny).float().mean()) > 0.5


def test_sinkhorn_gradient_path_gives_the_same_plans():
    x, y = feature_points(3, 6, 5, 4)
    x.requires_grad_(True)
    plan = sinkhorn(x, y, 0.5, tol=0)
    torch.testing.assert_close(plan, reference_sinkhorn(x.detach(), y, 0.5, tol=0), atol=1e-6, rtol=0)
    (plan * torch.arange(30.0).reshape(1, 6, 5)).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("direction", [0, 1])
def test_aligned_features_equal_the_reference(direction):
    g = torch.Generator().manual_seed(3)
    fmap = torch.randn(8, 64, 4, 4, generator=g).relu()  # (B, C, h, w) last feature maps
    perm = torch.randperm(8, generator=g)
    lam = torch.tensor(0.3)
    method = mixlab.create("alignmix", num_classes=10, seed=0)
    mixed = method.aligned_mix(fmap, perm, lam, direction)
    pa, pa2 = fmap.flatten(2).transpose(1, 2), fmap[perm].flatten(2).transpose(1, 2)
    r = reference_sinkhorn(pa, pa2, 0.1, tol=0.1) * 16
    torch.testing.assert_close(align(fmap, fmap[perm]), r, atol=1e-6, rtol=0)
    ref = (lam * pa + (1 - lam) * (r @ pa2) if direction == 1 else
           lam * (r.transpose(1, 2) @ pa) + (1 - lam) * pa2).transpose(1, 2).reshape(fmap.shape)
    torch.testing.assert_close(mixed, ref, atol=1e-6, rtol=1e-6)


def test_authors_baseline_solves_the_same_problem():
    from mixlab.cli.bench_ot import authors_sinkhorn

    x, y = feature_points(4, 9, 9, 3, torch.float64)
    ours = sinkhorn(x, y, 1.0, max_iter=300, tol=0)
    theirs = authors_sinkhorn(squared_distances(x, y), 1.0, max_iter=300, thresh=0.0)
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)  # up to their 1e-8 in log(1/r + 1e-8)
