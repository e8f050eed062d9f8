"""OT solvers (closed forms, marginals, POT agreement) and the OT / embedding-space methods."""
import json

import pytest
import torch

import mixlab
from mixlab.methods.alignmix import align
from mixlab.methods.multimix import dirichlet_weights
from mixlab.methods.opttransmix import barycenter_images, load_or_build_cache, sample_ratios
from mixlab.ot import blur, convolutional_barycenter, native, sinkhorn


def blob(cy, cx, size=28, sigma=1.5, dtype=torch.float64):
    t = torch.arange(size, dtype=dtype)
    img = torch.exp(-((t[:, None] - cy) ** 2 + (t[None, :] - cx) ** 2) / (2 * sigma ** 2))
    return img / img.sum()


def digits_like(n, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, size, size, generator=g, dtype=torch.float64) ** 4
    return x / x.sum((1, 2), keepdim=True)


def require_native():
    if not native.available():
        pytest.skip(f"the compiled barycenter kernel is not available here: {native.status()}")


@pytest.fixture(params=["torch", "native"])
def backend(request):
    """Where the float32 iterations run (mixed precision on CPU): PyTorch, or the compiled kernel."""
    if request.param == "native":
        require_native()
    return request.param


# ------------------------------------------------------------------------------------ barycenter
@pytest.mark.parametrize("reg,kernel", [(0.004, "auto"), (0.03, "auto"), (0.004, "axis"), (0.004, "exact")])
def test_barycenter_of_image_with_itself_is_its_entropic_blur(reg, kernel):
    a = digits_like(3, size=12)
    images = torch.stack([a, a], 1)
    w = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    bar = convolutional_barycenter(images, w, reg, tol=1e-10, max_iter=3000, kernel=kernel)
    torch.testing.assert_close(bar, blur(a, reg), atol=1e-6, rtol=0)
    assert not torch.allclose(bar, a, atol=1e-3), "the entropic barycenter is blurred, not the image itself"


def test_weight_one_gives_the_first_image_blurred_and_mass_is_preserved():
    a = digits_like(4, seed=1, size=12)
    images = torch.stack([a, a.flip(0)], 1)
    bar = convolutional_barycenter(images, torch.tensor([1.0, 0.0], dtype=torch.float64), 0.01, tol=1e-9)
    torch.testing.assert_close(bar, blur(a, 0.01), atol=1e-6, rtol=0)
    w = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.7, 0.3], [0.1, 0.9]], dtype=torch.float64)
    bar = convolutional_barycenter(images, w, 0.004, tol=1e-6)
    torch.testing.assert_close(bar.sum((1, 2)), torch.ones(4, dtype=torch.float64), atol=1e-6, rtol=0)
    assert bool((bar >= 0).all())


def test_barycenter_of_translated_blobs_is_displaced_not_cross_faded(backend):
    a, b = blob(14, 7), blob(14, 21)
    bar = convolutional_barycenter(torch.stack([a, b])[None], torch.tensor([0.5, 0.5]), 0.004, tol=1e-9,
                                   backend=backend)[0]
    cols = torch.arange(28, dtype=torch.float64)
    centre = float((bar.sum(0) * cols).sum())
    assert abs(centre - 14.0) < 0.05
    peak = bar.argmax()
    assert (int(peak // 28), int(peak % 28)) in [(14, 14), (14, 13), (14, 15)]
    assert float(bar[14, 7]) < 0.01 * float(bar.max()) and float(bar[14, 21]) < 0.01 * float(bar.max())
    # with weight 0.75 on the left blob, the mass sits a quarter of the way
    bar = convolutional_barycenter(torch.stack([a, b])[None], torch.tensor([0.75, 0.25]), 0.004, tol=1e-9,
                                   backend=backend)[0]
    assert abs(float((bar.sum(0) * cols).sum()) - 10.5) < 0.05


def test_barycenter_matches_pot_and_is_per_pair_independent(backend):
    ot = pytest.importorskip("ot")
    import numpy as np

    a = digits_like(6, seed=2, size=12).reshape(3, 2, 12, 12)
    w = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    ours = convolutional_barycenter(a.float(), w.float(), 0.01, tol=1e-7, max_iter=5000, backend=backend)
    assert ours.dtype == torch.float32
    for i in range(3):
        ref = ot.bregman.convolutional_barycenter2d(a[i].numpy(), 0.01, w[i].numpy(), stopThr=1e-8,
                                                    numItermax=20000, warn=False)
        assert float((ours[i].double() - torch.from_numpy(np.asarray(ref))).abs().sum()) < 1e-4
    alone = convolutional_barycenter(a[2:3].float(), w[2:3].float(), 0.01, tol=1e-7, max_iter=5000, backend=backend)
    torch.testing.assert_close(alone[0], ours[2], atol=1e-6, rtol=0)


def test_barycenter_of_sparse_images_matches_pot(backend):
    """Images empty outside boxes of different places and sizes: the solver works in a box per image (exact).

    Against POT's log-domain solver: its default one underflows on these images (L1 errors up to 1.2)."""
    ot = pytest.importorskip("ot")
    import numpy as np

    full = digits_like(6, seed=5, size=20)
    a = torch.zeros(6, 20, 20, dtype=torch.float64)
    for i, (r, c, h, w) in enumerate([(2, 3, 9, 7), (8, 1, 11, 12), (0, 0, 20, 5), (5, 9, 6, 11), (1, 1, 3, 3),
                                      (10, 12, 10, 8)]):
        a[i, r:r + h, c:c + w] = full[i, r:r + h, c:c + w]
    a = (a / a.sum((1, 2), keepdim=True)).reshape(3, 2, 20, 20)
    w = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2]], dtype=torch.float64)
    ours = convolutional_barycenter(a, w, 0.004, tol=1e-8, max_iter=5000, backend=backend)
    for i in range(3):
        ref = ot.bregman.convolutional_barycenter2d(a[i].numpy(), 0.004, w[i].numpy(), method="sinkhorn_log",
                                                    stopThr=1e-10, numItermax=50000, warn=False)
        assert float((ours[i] - torch.from_numpy(np.asarray(ref))).abs().sum()) < 1e-7


def test_acceleration_keeps_the_fixed_point_and_saves_iterations():
    a = digits_like(8, seed=3, size=16).reshape(4, 2, 16, 16)
    w = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]], dtype=torch.float64)
    run = dict(reg=0.004, tol=1e-9, max_iter=5000, precision="exact", log=True)
    plain, info1 = convolutional_barycenter(a, w, anderson=0, relax=1.0, **run)
    over, info2 = convolutional_barycenter(a, w, anderson=0, relax=1.5, **run)
    mixed, info3 = convolutional_barycenter(a, w, **run)  # Anderson, m = 5
    torch.testing.assert_close(over, plain, atol=1e-7, rtol=0)
    torch.testing.assert_close(mixed, plain, atol=1e-7, rtol=0)
    assert int(info2["niter"].sum()) < 0.85 * int(info1["niter"].sum())
    assert int(info3["niter"].sum()) < 0.5 * int(info1["niter"].sum())
    with pytest.raises(ValueError, match="relax"):
        convolutional_barycenter(a, w, 0.004, relax=2.0)


def test_mixed_precision_finishes_in_exact_arithmetic(backend):
    """reg = 0.004 needs float64: mixed precision iterates in float32, then the float64 kernel must meet tol."""
    a = digits_like(12, seed=4, size=28).reshape(6, 2, 28, 28).float()
    w = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.6, 0.4], [0.8, 0.2], [0.9, 0.1]])
    for tol in (1e-4, 1e-8):  # at 1e-8 the float32 iterations stall and hand over to float64
        mixed, info = convolutional_barycenter(a, w, 0.004, tol=tol, log=True, backend=backend)
        assert info["backend"] == backend
        # float32 weights are renormalised in float64 for the exact phase; without that it stalled near 2e-8
        assert int(info["niter"].max()) < 300
        exact, info_x = convolutional_barycenter(a, w, 0.004, tol=tol, precision="exact", log=True)
        assert mixed.dtype == torch.float32
        assert bool((info["err"] < tol).all()) and bool((info_x["err"] < tol).all())
        assert bool((info["niter_exact"] >= 1).all()) and bool((info["niter_exact"] < info["niter"]).all())
        assert bool((info_x["niter_exact"] == info_x["niter"]).all())
        assert float((mixed - exact).abs().sum((1, 2)).max()) < 20 * tol


def test_barycenter_weights_are_normalised_and_order_free(backend):
    a = digits_like(6, seed=5, size=12).reshape(2, 3, 12, 12)
    w = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=torch.float64)
    ref = convolutional_barycenter(a, w, 0.01, tol=1e-9, backend=backend)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(convolutional_barycenter(a[:, perm], w[:, perm], 0.01, tol=1e-9, backend=backend),
                               ref, atol=1e-7, rtol=0)
    torch.testing.assert_close(convolutional_barycenter(a, 3 * w, 0.01, tol=1e-9, backend=backend), ref, atol=1e-7,
                               rtol=0)
    with pytest.raises(ValueError, match="non-negative"):
        convolutional_barycenter(a, torch.tensor([0.5, 0.7, -0.2]), 0.01)


def test_barycenter_half_precision_and_bad_input():
    a = digits_like(2, size=12).reshape(1, 2, 12, 12)
    out = convolutional_barycenter(a.half(), torch.tensor([0.5, 0.5]), 0.01)
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="B, k, H, W"):
        convolutional_barycenter(a[0], torch.tensor([0.5, 0.5]), 0.01)
    with pytest.raises(ValueError, match="weights"):
        convolutional_barycenter(a, torch.tensor([0.2, 0.3, 0.5]), 0.01)
    w = torch.tensor([0.5, 0.5])
    for bad, message in ((-a, "non-negative"), (a.index_fill(1, torch.tensor([1]), float("nan")), "NaN"),
                         (a.index_fill(1, torch.tensor([0]), 0.0), "no mass")):
        with pytest.raises(ValueError, match=message):
            convolutional_barycenter(bad, w, 0.01)


def test_barycenter_refuses_non_finite_weights_and_normalises_mass(backend):
    """A NaN weight used to give all-NaN images; images of mass 5 came back with mass 5 (unit mass documented)."""
    a = digits_like(4, seed=2, size=12).reshape(2, 2, 12, 12).float()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            convolutional_barycenter(a, torch.tensor([[0.5, 0.5], [bad, 0.5]]), 0.01, backend=backend)
    w = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    ref = convolutional_barycenter(a, w, 0.01, tol=1e-7, backend=backend)
    heavy = a * torch.tensor([5.0, 3.0])[None, :, None, None]  # masses 5 and 3, same shapes
    before = heavy.clone()
    bar = convolutional_barycenter(heavy, w, 0.01, tol=1e-7, backend=backend)
    torch.testing.assert_close(bar.sum((1, 2)), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(bar, ref, atol=1e-6, rtol=1e-4)  # the barycenter of the normalised histograms
    assert torch.equal(heavy, before)  # the caller's images are not modified
    assert convolutional_barycenter(heavy.half(), w, 0.01).dtype == torch.float16


def test_native_and_torch_iterations_agree_and_threads_do_not_change_results():
    """The compiled float32 kernel runs the same iteration as PyTorch (one group at a time, checked every
    iteration): same barycenters up to the tolerance, the exact phase still has the last word (err < tol), and
    splitting the groups over threads changes nothing, bit for bit."""
    require_native()
    g = torch.Generator().manual_seed(7)
    a = digits_like(24, seed=6, size=28).float()
    for k in (2, 3):
        images = a[: 8 * k].reshape(8, k, 28, 28)
        w = torch.rand(8, k, generator=g) + 0.05
        out = {}
        for backend in ("torch", "native"):
            bar, info = convolutional_barycenter(images, w, 0.004, tol=1e-6, log=True, backend=backend)
            assert bool((info["err"] < 1e-6).all())
            assert bool((info["niter_exact"] <= 3).all()), "the float32 start should leave little to the exact phase"
            out[backend] = bar, info
        l1 = (out["native"][0] - out["torch"][0]).abs().sum((1, 2))
        assert float(l1.max()) < 1e-5
        # the same warm start as PyTorch's, give or take the iteration the checks land on
        n_native, n_torch = out["native"][1]["niter"], out["torch"][1]["niter"]
        assert int((n_native - n_torch).abs().max()) <= 3
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = convolutional_barycenter(images, w, 0.004, backend="native")
        torch.set_num_threads(2)
        two = convolutional_barycenter(images, w, 0.004, backend="native")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.parametrize("h,w,k,reg,dtype", [(1, 30, 2, 0.004, torch.float32), (30, 1, 2, 0.004, torch.float32),
                                             (5, 40, 2, 0.004, torch.float64), (33, 17, 3, 0.006, torch.float32),
                                             (9, 9, 5, 0.01, torch.float32), (28, 28, 16, 0.004, torch.float32)])
def test_native_kernel_on_odd_shapes_matches_torch(h, w, k, reg, dtype):
    """Grids of one row or column, rows not a multiple of 8, k up to 16, float64 and non-contiguous input, images
    empty outside random boxes, a zero weight: the compiled kernel's start gives PyTorch's barycenters."""
    require_native()
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.zeros(4, k, h, w, dtype=dtype)
    for i in range(4):
        for j in range(k):
            r0, c0 = (int(torch.randint(n, (1,), generator=g)) for n in (h, w))
            hh, ww = (int(torch.randint(1, n - o + 1, (1,), generator=g)) for n, o in ((h, r0), (w, c0)))
            x[i, j, r0:r0 + hh, c0:c0 + ww] = torch.rand(hh, ww, generator=g, dtype=dtype) ** 3 + 1e-3
    x = x / x.sum((-2, -1), keepdim=True)
    weights = torch.rand(4, k, generator=g)
    weights[0, 0] = 0.0
    strided = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # same values, another memory layout
    ref, info_t = convolutional_barycenter(x, weights, reg, tol=1e-6, max_iter=3000, log=True, backend="torch")
    out, info_n = convolutional_barycenter(strided, weights, reg, tol=1e-6, max_iter=3000, log=True, backend="native")
    assert info_n["backend"] == "native" and bool((info_n["err"] < 1e-6).all())
    assert float((out - ref).abs().sum((-2, -1)).max()) < 5e-6


def test_native_kernel_falls_back_and_says_why(monkeypatch, tmp_path):
    """Disabled, or no compiler that works: ``auto`` runs the PyTorch iteration, ``native`` says why it cannot."""
    a = digits_like(4, seed=8, size=12).reshape(2, 2, 12, 12)
    w = torch.tensor([0.3, 0.7])
    ref = convolutional_barycenter(a, w, 0.004, tol=1e-8, backend="torch")
    monkeypatch.setenv("MIXLAB_KERNEL_DIR", str(tmp_path))
    try:
        for env, value, reason in (("MIXLAB_NATIVE", "0", "disabled"), ("CC", "false", "compiling the kernel failed")):
            monkeypatch.setenv(env, value)
            native.reset()
            assert not native.available() and reason in native.status()
            bar, info = convolutional_barycenter(a, w, 0.004, tol=1e-8, log=True)
            torch.testing.assert_close(bar, ref, atol=0, rtol=0)
            assert info["backend"] == "torch"
            with pytest.raises(RuntimeError, match=reason):
                convolutional_barycenter(a, w, 0.004, backend="native")
            monkeypatch.delenv(env)
    finally:
        native.reset()  # the next use loads the kernel from the usual cache again
    with pytest.raises(ValueError, match="backend"):
        convolutional_barycenter(a, w, 0.004, backend="numba")
    # no float32 phase to hand over: reg large enough for an exact float32 kernel, or precision="exact"
    assert convolutional_barycenter(a.float(), w, 0.05, log=True)[1]["backend"] == "torch"
    assert convolutional_barycenter(a, w, 0.004, precision="exact", log=True)[1]["backend"] == "torch"


# -------------------------------------------------------------------------------------- sinkhorn
def test_sinkhorn_meets_both_marginals():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 9, 4, generator=g), torch.randn(5, 13, 4, generator=g)
    p = sinkhorn(x, y, eps=0.1, max_iter=2000, tol=1e-7)
    assert p.shape == (5, 9, 13)
    torch.testing.assert_close(p.sum(2), torch.full((5, 9), 1 / 9), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.sum(1), torch.full((5, 13), 1 / 13), atol=1e-4, rtol=0)
    p16 = sinkhorn(x.bfloat16(), y.bfloat16(), eps=0.5)
    assert p16.dtype == torch.bfloat16 and bool(torch.isfinite(p16.float()).all())


def test_aligning_a_permuted_copy_recovers_the_permutation():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 8, 4, 4, generator=g)  # (B, C, h, w), r = 16 positions
    perm = torch.randperm(16, generator=g)
    a2 = a.flatten(2)[:, :, perm].reshape(a.shape)  # a'_j = a_perm[j]
    r = align(a, a2, eps=0.01, max_iter=500, tol=0)
    expected = torch.zeros(16, 16)
    expected[perm, torch.arange(16)] = 1.0  # a_i matches a'_j where perm[j] = i
    torch.testing.assert_close(r, expected.expand(3, 16, 16), atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------ opttransmix
def test_opttransmix_ratios_labels_and_intensity_range():
    lam = sample_ratios(4000, torch.Generator().manual_seed(0))
    assert bool((((lam >= 0.1) & (lam <= 0.3)) | ((lam >= 0.7) & (lam <= 0.9))).all())
    assert 0.45 < float((lam > 0.5).float().mean()) < 0.55
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(6, 1, 16, 16)
    x[:, :, 4:12, 4:12] = torch.rand(6, 1, 8, 8, generator=g)
    x = x * 2 - 0.5  # a normalised-looking range [-0.5, 1.5]
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    mixer = mixlab.create("opttransmix", num_classes=6, reg=0.01, mode="online")
    x0 = x.clone()
    x_mix, t = mixer(x, y)
    assert torch.equal(x, x0)
    lam, perm = mixer.last.lam, mixer.last.index
    heavier = torch.where(lam >= 0.5, y, y[perm])
    assert torch.equal(t.argmax(1), heavier) and torch.equal(t.sum(1), torch.ones(6))
    lo = lam * x.amin((1, 2, 3)) + (1 - lam) * x[perm].amin((1, 2, 3))
    hi = lam * x.amax((1, 2, 3)) + (1 - lam) * x[perm].amax((1, 2, 3))
    torch.testing.assert_close(x_mix.amin((1, 2, 3)), lo, atol=1e-4, rtol=0)
    torch.testing.assert_close(x_mix.amax((1, 2, 3)), hi, atol=1e-4, rtol=0)


def test_opttransmix_cache_is_resumable_and_keyed(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 1, 12, 12, generator=g) ** 3 * 255).to(torch.uint8)
    y = torch.arange(6)
    m = mixlab.create("opttransmix", num_classes=6, reg=0.02, per_image=2, chunk=5, max_iter=200)
    c1 = load_or_build_cache(m, x, y, tmp_path, progress=False)
    meta = json.loads((c1["folder"] / "meta.json").read_text())
    assert meta["count"] == 12 and meta["settings"]["reg"] == 0.02 and meta["parts"] == 3
    assert bool((c1["i"] != c1["j"]).all())
    # resume: drop a part and the meta, rebuild gives identical content
    (c1["folder"] / "part-00001.pt").unlink()
    (c1["folder"] / "meta.json").unlink()
    c2 = load_or_build_cache(m, x, y, tmp_path, progress=False)
    assert torch.equal(c1["x"], c2["x"]) and torch.equal(c1["lam"], c2["lam"])
    expected = barycenter_images(x[c1["i"][:3]].float() / 255, x[c1["j"][:3]].float() / 255, c1["lam"][:3], 0.02,
                                 max_iter=200, tol=1e-4)
    assert float((expected * 255 - c1["x"][:3].float()).abs().max()) <= 0.5 + 1e-3
    m2 = mixlab.create("opttransmix", num_classes=6, reg=0.03, per_image=2, chunk=5, max_iter=200)
    assert load_or_build_cache(m2, x, y, tmp_path, progress=False)["folder"] != c1["folder"]
    # a new solver revision (which changes the run ids) never reads the old solver's barycenters
    m3 = mixlab.create("opttransmix", num_classes=6, reg=0.02, per_image=2, chunk=5, max_iter=200)
    m3.revision = 1
    assert load_or_build_cache(m3, x, y, tmp_path, progress=False)["folder"] != c1["folder"]


# ------------------------------------------------------------------------- feature-space methods
def small_model(name="preactresnet18"):
    torch.manual_seed(0)
    if name == "cnn11":
        return mixlab.create_model("cnn11", num_classes=5, in_channels=1, image_size=16, width=0.1)
    return mixlab.create_model("preactresnet18", num_classes=5, in_channels=1, width=4)


def batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 1, 16, 16, generator=g)
    return x, torch.nn.functional.one_hot(torch.arange(b) % 5, 5).float()


def test_multimix_weights_convex_and_targets_sum_to_one():
    lam = dirichlet_weights(1.0, 8, 1000, torch.Generator().manual_seed(0))
    assert lam.shape == (8, 1000) and bool((lam >= 0).all())
    torch.testing.assert_close(lam.sum(0), torch.ones(1000), atol=1e-5, rtol=0)
    _, t = batch()
    torch.testing.assert_close((lam.t() @ t).sum(1), torch.ones(1000), atol=1e-5, rtol=0)
    assert abs(float(lam.mean()) - 1 / 8) < 0.01  # symmetric Dirichlet: E[lambda_i] = 1 / m
    dense = mixlab.create("dense-multimix", num_classes=5)
    att = torch.rand(8, 16)
    att[:, 3] = 0  # a position with no attention falls back to Lambda
    m = dense.dense_weights(att / att.sum(1, keepdim=True), dirichlet_weights(1.0, 8, 50, dense.generator, (16,)))
    torch.testing.assert_close(m.sum(1), torch.ones(16, 50), atol=1e-5, rtol=0)
    # tuples of m = 3 examples: three non-zero convex weights per column, the same three at every position
    lam = dirichlet_weights(1.0, 8, 200, torch.Generator().manual_seed(1), (16,), support=3)
    assert bool(((lam > 0).sum(1) == 3).all()) and bool(((lam > 0) == (lam[:1] > 0)).all())
    torch.testing.assert_close(lam.sum(1), torch.ones(16, 200), atol=1e-5, rtol=0)


def test_multimix_loss_is_clean_plus_mixed_with_same_weights():
    model, (x, t) = small_model(), batch()
    model.eval()
    method = mixlab.create("multimix", num_classes=5, n=64, seed=3)
    loss = method.training_loss(model, x, t)
    lam = method.last_weights
    z = model.embed(x)
    ref = mixlab.soft_cross_entropy(model.head(lam.t() @ z), lam.t() @ t) + mixlab.soft_cross_entropy(model(x), t)
    torch.testing.assert_close(loss, ref)
    for name in ("multimix", "dense-multimix"):  # mean_loss: the same sum over 1 + clean_weight
        summed = mixlab.create(name, num_classes=5, n=64, seed=3, clean_weight=0.5).training_loss(model, x, t)
        mean = mixlab.create(name, num_classes=5, n=64, seed=3, clean_weight=0.5, mean_loss=True)
        torch.testing.assert_close(mean.training_loss(model, x, t), summed / 1.5)


def test_multimix_feature_map_equals_embedding_under_gap_and_not_under_fc_layers():
    x, t = batch()
    cnn = mixlab.create_model("cnn11", num_classes=5, in_channels=1, image_size=16, width=0.25, dropout=0.0)
    for model, same in ((small_model("preactresnet18").eval(), True), (cnn.train(), False)):  # BN on batch stats
        a = mixlab.create("multimix", num_classes=5, n=32, seed=5).training_loss(model, x, t)
        method = mixlab.create("multimix", num_classes=5, n=32, seed=5, mix_at="feature-map")
        b = method.training_loss(model, x, t)
        if same:  # GAP is linear: mixing before or after it is the same
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:  # cnn11: the mixed feature maps go through the hidden FC layers
            lam, f = method.last_weights, model.forward_features(x)
            mixed = (lam.t() @ f.flatten(1)).reshape(-1, *f.shape[1:])
            ref = mixlab.soft_cross_entropy(model(x), t)
            ref = ref + mixlab.soft_cross_entropy(model.head(model.pool(mixed)), lam.t() @ t)
            torch.testing.assert_close(b, ref)
            assert abs(float(a.detach() - b.detach())) > 1e-4
    with pytest.raises(ValueError, match="mix_at"):
        mixlab.create("multimix", num_classes=5, mix_at="input")


@pytest.mark.parametrize("name", ["alignmix", "multimix", "dense-multimix"])
@pytest.mark.parametrize("arch", ["preactresnet18", "cnn11"])
def test_feature_methods_train_and_same_seed_same_loss(name, arch):
    x, t = batch()
    losses = []
    for _ in range(2):
        model = small_model(arch)
        model.eval()  # no dropout: the loss depends on the method's generator only
        method = mixlab.create(name, num_classes=5, seed=7, **({"p_input": 0.0} if name == "alignmix" else {}))
        loss = method.training_loss(model, x, t)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1]


def test_alignmix_gradient_flows_through_features_not_plan():
    model, (x, _) = small_model(), batch()
    model.eval()
    method = mixlab.create("alignmix", num_classes=5, seed=1, p_input=0.0)
    fmap = model.forward_features(x).detach().requires_grad_(True)
    lam, perm = torch.tensor(0.3), torch.randperm(8, generator=torch.Generator().manual_seed(0))
    mixed = method.aligned_mix(fmap, perm, lam, direction=1)
    r = method.last_plan
    assert not r.requires_grad
    n = fmap.shape[2] * fmap.shape[3]
    torch.testing.assert_close(r.sum(1), torch.ones(8, n), atol=1e-4, rtol=0)  # R = r P: columns exact,
    torch.testing.assert_close(r.sum(2), torch.ones(8, n), atol=0.1, rtol=0)  # rows to the early-stop tolerance
    (g,) = torch.autograd.grad(mixed.square().sum(), fmap)
    # with R constant, d/dA of |lam A + (1 - lam) A'R^T|^2 in closed form
    pa = fmap.detach().flatten(2).transpose(1, 2)
    m = lam * pa + (1 - lam) * torch.bmm(r, pa[perm])
    expected = 2 * lam * m
    expected.index_add_(0, perm, 2 * (1 - lam) * torch.bmm(r.transpose(1, 2), m))
    torch.testing.assert_close(g.flatten(2).transpose(1, 2), expected, atol=1e-4, rtol=1e-4)


def test_dense_multimix_attention_is_detached_and_matches_cam():
    model, (x, t) = small_model(), batch()
    method = mixlab.create("dense-multimix", num_classes=5)
    fmap = model.forward_features(x)
    att = method.attention(model, fmap, t)
    assert not att.requires_grad
    cam = torch.relu(torch.einsum("bc,bchw->bhw", model.head.weight[t.argmax(1)], fmap)).flatten(1)
    some = cam.sum(1) > 0
    assert bool(some.any())
    torch.testing.assert_close(att[some], cam[some] / cam[some].sum(1, keepdim=True), atol=1e-5, rtol=1e-4)
    assert bool((att[~some] == 0).all())


def test_engine_trains_opttransmix_from_cache(tmp_path, data_root):
    from mixlab.train import TrainConfig, make_trainer

    config = TrainConfig(dataset="mnist", model="cnn11", method="opttransmix+mixup", subset_per_class=3,
                         test_limit=50, epochs=1, batch_size=10, model_kwargs={"width": 0.1},
                         method_kwargs={"per_image": 1, "reg": 0.01})
    result = make_trainer(config, out=tmp_path, data_dir=str(data_root), progress=False).run()
    assert 0 <= result["test_error"] <= 100
    folders = list((tmp_path / "cache" / "opttransmix").iterdir())
    assert len(folders) == 1 and json.loads((folders[0] / "meta.json").read_text())["count"] == 30
