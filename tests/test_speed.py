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
    from mixlab.bench.ot import authors_sinkhorn

    x, y = feature_points(4, 9, 9, 3, torch.float64)
    ours = sinkhorn(x, y, 1.0, max_iter=300, tol=0)
    theirs = authors_sinkhorn(squared_distances(x, y), 1.0, max_iter=300, thresh=0.0)
    torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=0)  # up to their 1e-8 in log(1/r + 1e-8)


# -------------------------------------------------------------------------------------- methods' losses
def fixed_batch(b=8, channels=1, size=28, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, channels, size, size, generator=g)
    return x, torch.nn.functional.one_hot(torch.arange(b) % classes, classes).float()


def small_cnn(classes=5, seed=0):
    torch.manual_seed(seed)
    return mixlab.create_model("cnn11", num_classes=classes, in_channels=1, image_size=28, width=0.25,
                               dropout=0.0).train()


def reference_amp_loss(model, x, t, generator, epsilon=0.002, alpha=1.0):
    """AMP's min-max-rand step on input mixup, written out (per-sample lambda, Eq. 15-21)."""
    from mixlab.methods.base import sample_beta, soft_cross_entropy

    sample_beta(alpha, generator)  # the inner Mixup's per-batch draw, replaced by a per-sample one
    perm = torch.randperm(x.shape[0], generator=generator)
    lam = sample_beta(alpha, generator, (x.shape[0],))
    t_mix = lam[:, None] * t + (1 - lam[:, None]) * t[perm]

    def forward(l):
        w = l.reshape(-1, 1, 1, 1)
        return model(x[perm] + w * (x - x[perm]))

    lam_in = lam.clone().requires_grad_(True)
    loss_pre = soft_cross_entropy(forward(lam_in), t_mix, reduction="none")
    (grad,) = torch.autograd.grad(loss_pre.mean(), lam_in, retain_graph=True)
    loss_cur = soft_cross_entropy(forward((lam + epsilon * grad).detach()), t_mix, reduction="none")
    mask = ((loss_cur - loss_pre).detach() > 0).float()
    return (loss_cur * mask + loss_pre * (1 - mask)).mean()


def test_amp_loss_and_engine_step_equal_the_reference(tmp_path):
    from mixlab.train import TrainConfig, Trainer

    x, t = fixed_batch()
    amp = mixlab.create("amp+mixup", num_classes=5, seed=3)
    state = amp.generator.get_state()
    loss = amp.training_loss(small_cnn(), x, t)
    ref = reference_amp_loss(small_cnn(), x, t, torch.Generator().set_state(state))
    assert torch.equal(loss, ref)
    # the engine's step (backward into the trained parameters only) moves them as a plain backward does
    config = TrainConfig(dataset="digits", model="cnn11", model_kwargs={"width": 0.25}, method="amp+mixup",
                         subset_per_class=4, batch_size=8, epochs=1)
    trainer = Trainer(config, out=tmp_path, store=False, progress=False)
    trainer.setup()
    import copy

    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    xb = trainer.train_batch(torch.arange(8), torch.Generator().manual_seed(0))
    state = trainer.method.generator.get_state()
    torch.manual_seed(5)  # dropout
    trainer.optimizer_step(trainer.step_loss(xb, trainer.t_train[:8]))
    trainer.method.generator.set_state(state)
    torch.manual_seed(5)
    ref_loss = trainer.method.training_loss(model, xb, trainer.t_train[:8])
    optimizer.zero_grad()
    ref_loss.backward()
    optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), model.parameters()))


def test_transformmix_loss_equals_the_reference():
    from mixlab.methods.base import soft_cross_entropy
    from mixlab.methods.transformmix import MixingModule, TransformMix, class_activation_maps, draw_groups

    x, t = fixed_batch()
    teacher = small_cnn(seed=1).eval()
    method = TransformMix(num_classes=5, seed=2).attach(teacher, MixingModule(k=2, image_size=28))
    method.set_normalization((0.5,), (0.25,))
    state = method.generator.get_state()
    loss = method.training_loss(small_cnn(), x, t)
    g = torch.Generator().set_state(state)  # the former mix, step by step
    lam, index = draw_groups(8, 2, 1.0, g)
    z = torch.randn(8, 1, 28, 28, generator=g)
    cams = class_activation_maps(teacher, x, t.argmax(1))
    with torch.no_grad():
        out = method.module((x * 0.25 + 0.5)[index].transpose(0, 1), cams[index].transpose(0, 1), lam, z)
    t_mix = torch.einsum("bk,kbc->bc", lam, t[index])
    assert torch.equal(loss, soft_cross_entropy(small_cnn()((out.x_mix - 0.5) / 0.25), t_mix))
    assert torch.equal(method.last.lam, lam[:, 0]) and torch.equal(method.last.index, index[1])
    assert method.last.lam.device.type == "cpu" and method.last.index.device.type == "cpu"


@pytest.mark.parametrize("model_name,options", [("cnn11", {"n": 50}), ("cnn11", {"n": 40, "m": 3, "mix_at": "feature-map"}),
                                                ("preactresnet18", {"n": 30, "mix_at": "feature-map"})])
def test_multimix_loss_equals_the_reference(model_name, options):
    """Mixing embeddings (eq. 3) as written, against MultiMix, which mixes logits where the classifier is affine
    (equal up to rounding; bit for bit elsewhere)."""
    from mixlab.methods.base import soft_cross_entropy

    x, t = fixed_batch()
    method = mixlab.create("multimix", num_classes=5, seed=4, **options)
    state = method.generator.get_state()
    if model_name == "cnn11":
        model = small_cnn()
    else:
        torch.manual_seed(0)
        model = mixlab.create_model("preactresnet18", num_classes=5, in_channels=1, width=8).train()
    loss = method.training_loss(model, x, t)
    g = torch.Generator().set_state(state)  # Dir(1) over the batch (or m of it) per column, eqs. 3-4
    n, b = options["n"], x.shape[0]
    gam = torch._standard_gamma(torch.ones(n, b), generator=g)
    if "m" in options:
        keys = torch.rand(n, b, generator=g)
        gam = gam * (keys >= keys.topk(options["m"], dim=-1).values[..., -1:])
    lam = (gam / gam.sum(-1, keepdim=True)).t()
    if options.get("mix_at") == "feature-map":
        z = model.forward_features(x)
        classify = lambda f: model.head(model.pool(f))  # noqa: E731
    else:
        z, classify = model.embed(x), model.head
    z_mix = (lam.t() @ z.flatten(1)).reshape(-1, *z.shape[1:])
    ref = soft_cross_entropy(classify(z_mix), lam.t() @ t) + soft_cross_entropy(classify(z), t)
    affine = method.affine_classifier(model)
    assert affine == (model_name == "preactresnet18" or options.get("mix_at") != "feature-map")
    if affine:
        torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    else:
        assert torch.equal(loss, ref)
    # and the gradient it trains with
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    for g1, g2 in zip(grads, ref_grads):
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-6)
