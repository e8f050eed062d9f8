"""AutoMix (Zhu et al. 2020) and TransformMix: networks, losses, frozen modules, artefacts, CLI."""
import math

import pytest
import torch
import torch.nn.functional as F

from mixlab.methods.automix_zhu import AutoMixZhu, BarycenterUNet, reconstruction_loss
from mixlab.methods.base import choose_partners
from mixlab.methods.learned import count_parameters
from mixlab.methods.transformmix import MixingModule, TransformMix, class_activation_maps, fit_mixup_temperature
from mixlab.models.cnn11 import CNN11
from mixlab.registry import METHODS
from mixlab.search import search_module


pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n, channels=1, size=28, seed=0):
    """Smooth random images in [0, 1] (distinct per seed)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 7, 7, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def one_hot(y, c=10):
    return F.one_hot(y, c).float()


# ------------------------------------------------------------------------------------------- AutoMix (Zhu)
def test_registry_names():
    assert type(METHODS.create("automix-zhu", num_classes=10)).__name__ == "AutoMixZhu"
    assert type(METHODS.create("transformmix", num_classes=10)).__name__ == "TransformMix"


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 8)])
def test_generator_shape_and_range(channels, size):
    g = BarycenterUNet(channels)
    x1, x2 = blobs(3, channels, size, 0), blobs(3, channels, size, 1)
    for lam in (torch.rand(3), torch.tensor(0.3)):
        out = g(x1, x2, lam)
        assert out.shape == x1.shape
        assert float(out.detach().min()) >= 0.0 and float(out.detach().max()) <= 1.0
    # paper: ~1.96 M parameters; ours 1.87 M (decoder widths are not in the paper)
    assert 1.8e6 < count_parameters(g) < 2.0e6


def test_generator_combines_features_by_lambda():
    # at lam = 1 the second image's features are multiplied by 0 at every scale: x2 cannot matter
    g = BarycenterUNet(1).eval()
    x1 = blobs(2, seed=0)
    a = g(x1, blobs(2, seed=1), torch.ones(2))
    b = g(x1, blobs(2, seed=2), torch.ones(2))
    assert torch.allclose(a, b, atol=1e-6)
    c = g(x1, blobs(2, seed=2), torch.full((2,), 0.5))
    assert not torch.allclose(a, c, atol=1e-4)


def test_reconstruction_only_moves_generator_toward_first_image():
    torch.manual_seed(0)
    g = BarycenterUNet(1, widths=(8, 8, 8, 8, 8))
    x1, x2 = blobs(2, size=16, seed=3), blobs(2, size=16, seed=4)
    lam = torch.ones(2)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    with torch.no_grad():
        before = (g(x1, x2, lam) - x1).abs().mean()
    for _ in range(40):
        loss = reconstruction_loss(x1, x2, g(x1, x2, lam), lam)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = g(x1, x2, lam)
    after1, after2 = (out - x1).abs().mean(), (out - x2).abs().mean()
    assert after1 < 0.5 * before
    assert after1 < 0.5 * after2


def test_generator_reproduces_standardised_features_with_a_linear_output():
    # MIML-like bags: standardised features, about half negative, beyond [0, 1]
    torch.manual_seed(0)
    x = torch.randn(6, 1, 9, 15, generator=torch.Generator().manual_seed(0)) * 2
    m = AutoMixZhu(num_classes=5, widths=(8, 8, 8, 8, 8), seed=0)
    assert m.choose_output(x) == "linear"
    assert AutoMixZhu(num_classes=5, widths=(8,) * 5).choose_output(blobs(2, size=9)) == "sigmoid"
    assert AutoMixZhu(num_classes=5, widths=(8,) * 5).choose_output(torch.full((2, 1, 9, 9), 255, dtype=torch.uint8)) \
        == "sigmoid"  # the engine's uint8 images
    sig = BarycenterUNet(1, widths=(8,) * 5)
    lam = torch.ones(6)
    for g, fits in ((m.generator_net, True), (sig, False)):
        torch.manual_seed(0)
        opt = torch.optim.Adam(g.parameters(), lr=1e-2)
        for _ in range(80):
            loss = reconstruction_loss(x, x.flip(0), g(x, x.flip(0), lam), lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = g(x, x.flip(0), lam)
        err = (out - x).abs().mean()
        if fits:  # follows the negative values too
            assert err < 0.15 * x.abs().mean() and out[x < -1].max() < 0
        else:  # a sigmoid cannot go below 0: the negative half stays lost
            assert out.min() > 0 and err > 0.6 * x.abs().mean()
    state = m.state_dict()
    assert state["generator_net._extra_state"] == {"output": "linear", "fusion": "lambda"}
    again = AutoMixZhu(num_classes=5, widths=(8,) * 5, in_channels=1)
    again.load_state_dict(state)
    assert again.generator_net.output == "linear"
    with pytest.raises(ValueError, match="output"):
        AutoMixZhu(output="tanh")


def test_training_loss_is_eq10_and_reaches_the_generator():
    m = AutoMixZhu(num_classes=10, in_channels=1, seed=3, clean_fraction=0.0)
    x, y = blobs(6, seed=5), torch.arange(6) % 3
    # a constant classifier: the cooperative term is log(10) and gives the generator no gradient
    flat = torch.nn.Linear(1, 10)
    torch.nn.init.zeros_(flat.weight), torch.nn.init.zeros_(flat.bias)
    model = lambda inp: flat(inp.mean((1, 2, 3))[:, None])  # noqa: E731
    loss = m.training_loss(model, x, one_hot(y))
    lam, index = m.last.lam, m.last.index
    with torch.no_grad():
        x_hat = m.generator_net(x, x[index], lam)
    expected = math.log(10) + 1.5 * reconstruction_loss(x, x[index], x_hat, lam)
    assert torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in m.generator_net.encoder.parameters())


def test_default_mixes_half_the_batch_and_classifies_the_other_half_clean():
    m = AutoMixZhu(num_classes=10, in_channels=1, seed=3)  # clean_fraction 0.5, the authors' repository
    x, y = blobs(6, seed=5), torch.arange(6) % 3
    flat = torch.nn.Linear(1, 10)
    torch.nn.init.zeros_(flat.weight), torch.nn.init.zeros_(flat.bias)
    seen = []
    model = lambda inp: (seen.append(inp), flat(inp.mean((1, 2, 3))[:, None]))[1]  # noqa: E731
    loss = m.training_loss(model, x, one_hot(y))
    lam, index = m.last.lam, m.last.index
    assert lam.shape == (3,) and bool((index < 3).all())  # partners come from the mixed half
    assert torch.equal(seen[0][3:], x[3:])  # the second half reaches the classifier unmixed
    with torch.no_grad():
        x_hat = m.generator_net(x[:3], x[:3][index], lam)
    expected = math.log(10) + 1.5 * reconstruction_loss(x[:3], x[:3][index], x_hat, lam)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_label_strategies_and_pairs():
    t = one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    lam = torch.rand(8)
    index = torch.randperm(8)
    expect = {"d": lam[:, None] * t + (1 - lam[:, None]) * t[index], "a": t, "b": 0.5 * (t + t[index]),
              "c": (t + t[index]).clamp(max=1)}
    for strategy, want in expect.items():
        m = AutoMixZhu(label_strategy=strategy, num_classes=10)
        assert torch.allclose(m.mixed_targets(t, index, lam), want)
    g = torch.Generator().manual_seed(0)
    same, diff = choose_partners(t, g, "same"), choose_partners(t, g, "different")
    assert torch.equal(t[same], t) and not (same == torch.arange(8)).any()
    assert ((t[diff] != t).any(1)).all()
    with pytest.raises(ValueError, match="label_strategy"):
        AutoMixZhu(label_strategy="e")


def test_automix_trains_jointly_in_the_engine():
    from mixlab.train import TrainConfig, make_trainer

    config = TrainConfig(dataset="digits", model="cnn11", method="automix-zhu", epochs=1, batch_size=50,
                         subset_per_class=10,
                         model_kwargs={"width": 0.25}, method_kwargs={"widths": [8, 8, 8, 8, 8]})
    trainer = make_trainer(config, out="/tmp/mixlab-test-automix", store=False, progress=False)
    trainer.setup()
    assert trainer.method.generator_net.output == "sigmoid"  # uint8 images: [0, 1] after conversion
    gen_params = set(map(id, trainer.method.generator_net.parameters()))
    in_opt = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert gen_params <= in_opt
    before = [p.detach().clone() for p in trainer.method.generator_net.parameters()]
    trainer.train_epoch(0)
    changed = [not torch.equal(a, p) for a, p in zip(before, trainer.method.generator_net.parameters())]
    assert any(changed)


def test_automix_generator_lr_scale_and_lambda_distribution():
    """``generator_lr_scale`` puts the generator in its own optimiser group at that multiple of the scheduled rate
    (one group, as before, at 1); ``alpha`` draws Beta(alpha, alpha) ratios, and alpha 1 keeps U(0, 1) draw for
    draw."""
    from mixlab.train import TrainConfig, make_trainer

    def setup(**kw):
        config = TrainConfig(dataset="digits", model="cnn11", method="automix-zhu", epochs=4, batch_size=50,
                             subset_per_class=10, lr=0.1, milestones=(2,), model_kwargs={"width": 0.25},
                             method_kwargs={"widths": [8, 8, 8, 8, 8], **kw})
        trainer = make_trainer(config, out="/tmp/mixlab-test-automix", store=False, progress=False)
        trainer.setup()
        return trainer

    assert len(setup().optimizer.param_groups) == 1
    trainer = setup(generator_lr_scale=0.1)
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2
    assert {id(p) for p in groups[1]["params"]} == set(map(id, trainer.method.generator_net.parameters()))
    for epoch, base in ((0, 0.1), (3, 0.01)):
        trainer.begin_epoch(epoch)
        assert groups[0]["lr"] == pytest.approx(base) and groups[1]["lr"] == pytest.approx(0.1 * base)
    with pytest.raises(ValueError, match="generator_lr_scale"):
        AutoMixZhu(generator_lr_scale=0)
    t = torch.eye(10)[torch.arange(4000) % 10]
    lam_u, _ = AutoMixZhu(seed=3).sample(t)
    assert torch.equal(lam_u, torch.rand(4000, generator=torch.Generator().manual_seed(3)))
    lam_b, _ = AutoMixZhu(seed=3, alpha=0.2).sample(t)
    edges = ((lam_b < 0.1) | (lam_b > 0.9)).float().mean()
    assert float(edges) > 0.6 and float(((lam_u < 0.1) | (lam_u > 0.9)).float().mean()) < 0.25


def test_channel_mask_fusion_keeps_round_c_lambda_channels_of_the_first_image():
    net = BarycenterUNet(1, widths=(8, 8, 8, 8, 8), fusion="channel-mask")
    f1, f2 = torch.randn(4, 8, 3, 3) + 10, torch.randn(4, 8, 3, 3) - 10  # which image a channel came from
    lam = torch.tensor([0.0, 0.3, 0.55, 1.0]).reshape(-1, 1, 1, 1)
    fused = net.fuse(f1, f2, lam, torch.Generator().manual_seed(0))
    first, second = fused[:, :8], fused[:, 8:]
    from_first = (first != 0).all(-1).all(-1)
    assert from_first.sum(1).tolist() == [0, 2, 4, 8]  # round(8 lam)
    assert torch.equal(from_first, (second == 0).all(-1).all(-1))  # the other channels come from the partner
    assert torch.equal(first[from_first], f1[from_first]) and torch.equal(second[~from_first], f2[~from_first])
    m = AutoMixZhu(fusion="channel-mask", widths=(8, 8, 8, 8, 8), in_channels=1, num_classes=10, seed=0)
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6)
    x_mix, t_mix = m(x, y)
    assert x_mix.shape == x.shape and torch.isfinite(x_mix).all()
    assert torch.allclose(t_mix.sum(1), torch.ones(6))
    with pytest.raises(ValueError, match="fusion"):
        AutoMixZhu(fusion="add")


def test_generator_vs_barycenter_eval_uses_the_trained_generator(tmp_path):
    """``mixlab eval generator-vs-barycenter``: the distances are those of the run's own trained generator (not a
    fresh one), OptTransMix's barycenter and Mixup for the same seeded pairs; other methods are refused."""
    from mixlab.eval import run_eval
    from mixlab.eval.generator import l1_per_pair
    from mixlab.methods.opttransmix import barycenter_images
    from mixlab.train import TrainConfig, make_trainer

    common = dict(dataset="digits", model="cnn11", epochs=1, batch_size=50, subset_per_class=10,
                  model_kwargs={"width": 0.125}, threads=1)
    trainer = make_trainer(TrainConfig(method="automix-zhu", method_kwargs={"widths": [8, 8, 8, 8, 8]}, **common),
                           out=tmp_path, progress=False)
    run_id = trainer.run()["run_id"]
    ev = run_eval(tmp_path, run_id, "generator-vs-barycenter", pairs=6, lams=[0.3, 0.7], shown=2)
    assert ev["pairs"] == 6 and (tmp_path / "runs" / run_id / "eval" / "generator-vs-barycenter.png").exists()
    # recompute by hand: the same pairs, the trained generator from the checkpoint
    x = trainer.x_test.float() / 255
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:12]
    x1, x2, lam = x[pick[:6]], x[pick[6:]], torch.full((6,), 0.3)
    trained = AutoMixZhu(widths=[8, 8, 8, 8, 8], checkpoint=str(tmp_path / "runs" / run_id / "checkpoint.pt"))
    with torch.no_grad():
        gen = trained.eval().generator_net(x1, x2, lam)
        fresh = AutoMixZhu(widths=[8, 8, 8, 8, 8], in_channels=1).eval().generator_net(x1, x2, lam)
    bar = barycenter_images(x1, x2, lam, 0.004, max_iter=1000, tol=1e-4).clamp(0, 1)
    mix = lam[:, None, None, None] * x1 + (1 - lam[:, None, None, None]) * x2
    got = ev["lam=0.3"]
    assert got["generator_vs_barycenter"]["mean"] == pytest.approx(float(l1_per_pair(gen, bar).mean()), rel=1e-5)
    assert got["mixup_vs_barycenter"]["mean"] == pytest.approx(float(l1_per_pair(mix, bar).mean()), rel=1e-5)
    assert got["generator_vs_mixup"]["mean"] != pytest.approx(float(l1_per_pair(fresh, mix).mean()), rel=1e-3)
    # Eq. 9 in closed form: Mixup's image costs 2 lam (1 - lam) |x1 - x2|_1, the heavier input min(lam, 1 - lam) of it
    d12 = l1_per_pair(x1, x2)
    assert got["eq9_mixup"]["mean"] == pytest.approx(float((2 * 0.3 * 0.7 * d12).mean()), rel=1e-5)
    assert got["eq9_heavier"]["mean"] == pytest.approx(float((0.3 * d12).mean()), rel=1e-5)
    assert got["eq9_generator"]["mean"] == pytest.approx(float(reconstruction_loss(x1, x2, gen, lam)), rel=1e-5)
    erm = make_trainer(TrainConfig(method="erm", **common), out=tmp_path, progress=False).run()["run_id"]
    with pytest.raises(ValueError, match="automix-zhu run"):
        run_eval(tmp_path, erm, "generator-vs-barycenter")


# ------------------------------------------------------------------------------------------- TransformMix
def tiny_teacher(channels=1, size=28):
    torch.manual_seed(0)
    return CNN11(10, channels, size, width=0.125).eval()


@pytest.mark.parametrize("k,ablation", [(2, "none"), (3, "none"), (2, "stn-only"), (2, "mpn-only"),
                                        (2, "softmax-cam"), (3, "softmax-cam")])
def test_masks_sum_to_one_and_targets_follow_lambda(k, ablation):
    m = TransformMix(k=k, ablation=ablation, num_classes=10, seed=1)
    m.attach(tiny_teacher(), MixingModule(k=k, image_size=28, ablation=ablation))
    x, y = blobs(6, seed=6), torch.arange(6)
    x_mix, t_mix = m(x, y)
    out = m.last_output
    assert x_mix.shape == x.shape and out.masks.shape == (6, k, 28, 28)
    assert torch.allclose(out.masks.sum(1), torch.ones(6, 28, 28), atol=1e-5)
    assert float(out.masks.min()) >= 0
    assert torch.allclose(t_mix.sum(1), torch.ones(6), atol=1e-6)
    # the mix is the mask-weighted sum of the warped images (Eq. 4)
    assert torch.allclose(x_mix, (out.masks[:, :, None] * out.x_warped).sum(1), atol=1e-6)


def test_stn_is_identity_at_initialisation():
    module = MixingModule(k=3, image_size=28)
    x = blobs(12, seed=7).reshape(4, 3, 1, 28, 28)
    cams, lam = torch.rand(4, 3, 28, 28), torch.full((4, 3), 1 / 3)
    out = module(x, cams, lam, torch.randn(4, 1, 28, 28))
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 3, 2, 3)
    assert torch.allclose(out.theta, identity)
    assert torch.allclose(out.x_warped, x, atol=1e-5)
    assert torch.allclose(out.cams_warped, cams, atol=1e-5)


def test_lambda_prior_starts_from_the_masks_of_input_mixup():
    module = MixingModule(k=3, image_size=28)  # the default
    torch.nn.init.zeros_(module.mask_net.net[-1].weight)
    torch.nn.init.zeros_(module.mask_net.net[-1].bias)  # an f_m that says nothing
    x = blobs(12, seed=12).reshape(4, 3, 1, 28, 28)
    lam = torch.distributions.Dirichlet(torch.ones(3)).sample((4,))
    out = module(x, torch.rand(4, 3, 28, 28), lam, torch.randn(4, 1, 28, 28))
    assert torch.allclose(out.masks, lam[:, :, None, None].expand(4, 3, 28, 28), atol=1e-6)
    assert torch.allclose(out.x_mix, torch.einsum("bk,bkchw->bchw", lam, x), atol=1e-5)  # = input mixup
    zeroed = MixingModule(k=3, image_size=28, zero_mask_head=True)  # the same start, by construction
    assert torch.allclose(zeroed(x, torch.rand(4, 3, 28, 28), lam, torch.randn(4, 1, 28, 28)).masks,
                          lam[:, :, None, None].expand(4, 3, 28, 28), atol=1e-6)
    plain = MixingModule(k=3, image_size=28, lambda_prior=False)  # the paper's Eq. 3: 1/k masks whatever lambda
    plain.load_state_dict(module.state_dict())
    assert torch.allclose(plain(x, torch.rand(4, 3, 28, 28), lam, torch.randn(4, 1, 28, 28)).masks,
                          torch.full((4, 3, 28, 28), 1 / 3), atol=1e-6)


class LogTeacher(torch.nn.Module):
    """Logits ``s * log(x)`` on one-hot "images": softmax(logits / T) is the mixed label exactly when T = s."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return self.s * x.flatten(1).clamp_min(1e-12).log()


@pytest.mark.parametrize("s", [0.5, 4.0, 20.0])
def test_fitted_temperature_recovers_the_teachers_sharpness(s):
    y = torch.arange(200) % 10
    x = one_hot(y)[:, None, None, :]  # (N, 1, 1, 10)
    g = torch.Generator().manual_seed(0)
    t = fit_mixup_temperature(LogTeacher(s), x, one_hot(y), alpha=1.0, k=2, generator=g)
    assert abs(math.log(t / s)) < 0.03  # the grid's step is 5.9%


def test_search_with_fitted_temperature_records_it():
    teacher = tiny_teacher(1, 8)
    m = TransformMix(num_classes=10, search_epochs=1, search_batch_size=32, teacher_temperature="auto", seed=0)
    m.teacher = teacher.requires_grad_(False)
    x = (torch.rand(64, 1, 8, 8) * 255).to(torch.uint8)
    from mixlab.data.augment import BatchAugment

    search_module(m, MixingModule(k=2, image_size=8), x, one_hot(torch.arange(64) % 10), BatchAugment((0.5,), (0.25,)),
                  progress=False)
    assert m.fitted_temperature is not None and 0.1 <= m.fitted_temperature <= 100
    with pytest.raises(ValueError, match="teacher_temperature"):
        TransformMix(teacher_temperature=0)


def test_cams_are_normalised_and_sized():
    teacher = tiny_teacher()
    x = blobs(5, seed=8)
    cams = class_activation_maps(teacher, x, torch.arange(5))
    assert cams.shape == (5, 28, 28) and not cams.requires_grad
    assert torch.allclose(cams.amax((1, 2)), torch.ones(5))
    low = cams.amin((1, 2))
    assert ((low == 0) | (low == 1)).all()  # min-max scaled, or constant (uniform) maps


def test_frozen_module_and_teacher_get_no_gradient():
    teacher = tiny_teacher()
    m = TransformMix(num_classes=10).attach(teacher, MixingModule(k=2, image_size=28))
    task = CNN11(10, 1, 28, width=0.125)
    m.train()  # the engine calls this; teacher and frozen module must stay in eval mode
    assert not teacher.training and not m.module.training
    frozen = {name: p.detach().clone() for name, p in m.named_parameters()}
    loss = m.training_loss(task, blobs(8, seed=9), one_hot(torch.arange(8) % 10))
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in m.parameters())
    assert all(p.grad is not None for p in task.parameters())
    assert all(torch.equal(p, frozen[name]) for name, p in m.named_parameters())
    assert all(torch.equal(b, b0) for b, b0 in zip(teacher.buffers(), tiny_teacher().buffers()))


def test_saved_module_reloads_to_identical_outputs(tmp_path):
    module = MixingModule(k=2, image_size=28, ablation="none")
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = module.save(tmp_path / "m.pt", meta={"dataset": "test"})
    again = MixingModule.load(path)
    assert again.config() == module.config()
    blob = torch.load(path, weights_only=False)  # a file written before the lambda prior existed
    del blob["config"]["lambda_prior"]
    torch.save(blob, tmp_path / "old.pt")
    assert MixingModule.load(tmp_path / "old.pt").lambda_prior is False
    x, cams = blobs(8, seed=10).reshape(4, 2, 1, 28, 28), torch.rand(4, 2, 28, 28)
    lam, z = torch.tensor([[0.3, 0.7]]).expand(4, 2), torch.randn(4, 1, 28, 28)
    a, b = module(x, cams, lam, z), again(x, cams, lam, z)
    assert torch.equal(a.x_mix, b.x_mix) and torch.equal(a.masks, b.masks)
    # the same seed gives the same mixes through the method
    t1 = TransformMix(num_classes=10, seed=4).attach(tiny_teacher(), module)
    t2 = TransformMix(num_classes=10, seed=4).attach(tiny_teacher(), again)
    y = torch.arange(8)
    assert torch.equal(t1(blobs(8), y)[0], t2(blobs(8), y)[0])


def test_transfer_to_other_size_and_channels():
    module = MixingModule(k=2, image_size=20)  # "searched" at 20 px, used on 32 px RGB
    m = TransformMix(num_classes=10).attach(tiny_teacher(3, 32), module)
    x_mix, t_mix = m(blobs(6, 3, 32, seed=11), torch.arange(6))
    assert x_mix.shape == (6, 3, 32, 32)
    assert m.last_output.cams_warped.shape == (6, 2, 20, 20)
    assert torch.allclose(m.last_output.masks.sum(1), torch.ones(6, 32, 32), atol=1e-5)


def test_search_trains_the_module_against_a_fixed_teacher():
    teacher = tiny_teacher(1, 8)
    m = TransformMix(num_classes=10, search_epochs=2, search_lr=0.05, search_batch_size=32, seed=0)
    m.teacher = teacher.requires_grad_(False)
    module = MixingModule(k=2, image_size=8)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    teacher_before = [p.detach().clone() for p in teacher.parameters()]
    x = (torch.rand(64, 1, 8, 8) * 255).to(torch.uint8)
    t = one_hot(torch.arange(64) % 10)
    from mixlab.data.augment import BatchAugment

    losses = search_module(m, module, x, t, BatchAugment((0.5,), (0.25,)), progress=False)
    assert len(losses) == 2
    assert any(not torch.equal(p, before[n]) for n, p in module.named_parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters()))
    assert not any(p.requires_grad for p in module.parameters())  # frozen again afterwards


# ------------------------------------------------------------------------------------------- CLI
def test_cli_search_train_show_and_bench(tmp_path, capsys):
    from mixlab.cli import main

    common = ["--dataset", "digits", "--model-arg", "width=0.125", "--threads", "1", "--out", str(tmp_path)]
    module_path = tmp_path / "digits-module.pt"
    assert main(["transformmix", "search", "--save", str(module_path), "--teacher-epochs", "1", "--epochs", "1",
                 "--no-progress", *common]) == 0
    blob = MixingModule.read(module_path)
    assert blob["meta"]["dataset"] == "digits" and blob["teacher"]["dataset"] == "digits"
    # a second call reuses the cached teacher run and module
    assert main(["transformmix", "search", "--save", str(module_path), "--teacher-epochs", "1", "--epochs", "1",
                 "--no-progress", *common]) == 0
    assert main(["train", "--method", "transformmix", "--mixer-from", str(module_path), "--epochs", "1",
                 "--no-progress", "--json", *common]) == 0
    png = tmp_path / "tm.png"
    assert main(["show", "--method", "transformmix", "--method-arg", f"mixer_from={module_path}", "--pairs", "3",
                 "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    assert main(["bench-mixers", "--methods", "mixup,transformmix,automix-zhu,not-a-method", "--batch-size", "8",
                 "--shapes", "1x28", "--repeats", "1", "--model-arg", "width=0.125"]) == 0
    out = capsys.readouterr().out
    assert "skipping not-a-method" in out and "transformmix" in out and "automix-zhu" in out


def test_transformmix_mask_network_size_options():
    from types import SimpleNamespace

    context = SimpleNamespace(x=torch.zeros(1, 1, 28, 28))  # the set-up context's training inputs
    default = TransformMix(num_classes=10).module_config(context)
    assert not {"mask_layers", "mask_channels", "mask_kernel"} & set(default)  # earlier search keys stay valid
    config = TransformMix(num_classes=10, mask_layers=2, mask_channels=8, mask_kernel=5).module_config(context)
    module = MixingModule(**config)
    convs = [m for m in module.mask_net.net if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(8, (5, 5)), (8, (5, 5)), (2, (1, 1))]
    assert module.config()["mask_kernel"] == 5
    out = module(blobs(4).reshape(2, 2, 1, 28, 28), torch.rand(2, 2, 7, 7), torch.full((2, 2), 0.5),
                 torch.zeros(2, 1, 28, 28))
    assert out.masks.shape == (2, 2, 28, 28)
    with pytest.raises(ValueError, match="odd kernel"):
        TransformMix(num_classes=10, mask_kernel=4)


def test_transformmix_ablation_and_k3_reproductions_resolve():
    from mixlab.protocols import PROTOCOLS
    from mixlab.reproduce import REPRODUCTIONS, method_unavailable, paper_cell, paper_numbers

    numbers = paper_numbers()
    t4 = REPRODUCTIONS["transformmix-table4"].tables[0]
    ablations = {r.label: r.kwargs.get("ablation", "none") for r in t4.rows if r.method == "transformmix"}
    assert ablations == {"softmax+CAM": "softmax-cam", "w/ STN only": "stn-only", "w/ MPN only": "mpn-only",
                         "TransformMix": "none"}
    assert paper_cell(numbers, t4, t4.rows[3], t4.columns[0]) == (96.03, 0.02)  # STN only, CIFAR-10
    assert all(paper_cell(numbers, t4, r, c) for r in t4.rows for c in t4.columns)
    t7 = REPRODUCTIONS["transformmix-table7"].tables[0]
    assert [r.kwargs.get("k", 2) for r in t7.rows if r.method == "transformmix"] == [2, 3]
    for t in (t4, t7):
        for r in t.rows:
            if r.method != "comixup":  # a baseline of another issue
                assert method_unavailable(r.method, r.kwargs) is None, r.label
        for c in t.columns:
            assert c.protocol in PROTOCOLS and (c.quick is None or c.quick in PROTOCOLS)
