"""Mixers in users' loops: DataLoader workers and collate functions, timm's conveniences (prob, label smoothing,
mixing off after an epoch, Mixup / CutMix switching), PyTorch Lightning."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset, get_worker_info

import mixlab
from mixlab.methods.base import MixCollate


def batch(b=16, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g), torch.randint(num_classes, (b,), generator=g)


class Probe(MixCollate):
    """The collate function, plus which worker mixed the batch and with which lambda."""

    def __call__(self, samples):
        x, y = super().__call__(samples)
        return x, y, get_worker_info().id, self.mixer.last.lam.clone()


def lambda_streams(mixer, seed, epochs=1):
    x, y = batch(64)
    loader = DataLoader(TensorDataset(x, y), batch_size=4, num_workers=2, collate_fn=Probe(mixer),
                        generator=torch.Generator().manual_seed(seed))
    streams = []
    for _ in range(epochs):
        per_worker = {0: [], 1: []}
        for _, y_mix, worker, lam in loader:
            assert y_mix.shape == (4, 5)
            per_worker[int(worker)].append(float(lam))
        streams.append(per_worker)
    return streams


def test_two_workers_draw_different_reproducible_streams():
    mixer = mixlab.create("mixup", alpha=1.0, num_classes=5, seed=0)
    (first, second), (again,) = lambda_streams(mixer, seed=1, epochs=2), lambda_streams(mixer, seed=1)
    assert len(first[0]) == len(first[1]) == 8
    assert first[0] != first[1]  # was: 0.8638, 0.8638, 0.4509, 0.4509, ... (every worker a copy of one stream)
    assert first == again  # the same loader seed repeats the streams
    assert first[0] != second[0] and first[1] != second[1]  # and the next epoch draws new ones
    other_seed = lambda_streams(mixlab.create("mixup", alpha=1.0, num_classes=5, seed=1), seed=1)[0]
    assert other_seed[0] != first[0]  # the mixer's own seed counts too
    assert mixer._worker is None  # the parent's mixer is untouched


def test_collate_mixes_in_the_main_process_too():
    x, y = batch(8)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, collate_fn=mixlab.MixCollate(
        mixlab.create("cutmix", num_classes=5, seed=3)))
    x_mix, y_mix = next(iter(loader))
    expected = mixlab.create("cutmix", num_classes=5, seed=3)(x, y)
    assert torch.equal(x_mix, expected[0]) and torch.equal(y_mix, expected[1])
    with pytest.raises(TypeError, match="training_loss"):
        mixlab.MixCollate(mixlab.create("manifold"))


def test_prob_mixes_that_share_of_batches_and_prob_one_draws_nothing_extra():
    x, y = batch()
    never = mixlab.create("mixup", num_classes=5, prob=0.0)
    x_out, y_out = never(x, y)
    assert torch.equal(x_out, x) and x_out is not x and never.last is None
    assert torch.equal(y_out, torch.nn.functional.one_hot(y, 5).float())
    half = mixlab.create("mixup", num_classes=5, prob=0.5, seed=0)
    mixed = sum(half(x, y)[1].max(1).values.lt(1).any().item() for _ in range(200))
    assert 70 < mixed < 130
    plain, always = mixlab.create("mixup", num_classes=5, seed=4), mixlab.create("mixup", num_classes=5, seed=4, prob=1.0)
    assert torch.equal(plain(x, y)[0], always(x, y)[0])
    with pytest.raises(ValueError, match="prob"):
        mixlab.create("cutmix", prob=1.5)


def test_label_smoothing_on_mixed_targets():
    x, y = batch()
    eps = 0.1
    smooth = mixlab.create("mixup", num_classes=5, seed=2, label_smoothing=eps)
    _, t = smooth(x, y)
    _, t_plain = mixlab.create("mixup", num_classes=5, seed=2)(x, y)
    torch.testing.assert_close(t, (1 - eps) * t_plain + eps / 5)
    torch.testing.assert_close(t.sum(1), torch.ones(16))
    assert float(t.min()) >= eps / 5 - 1e-7


def test_mixing_off_after_epoch_in_the_engine(tmp_path):
    from mixlab.train import TrainConfig, Trainer

    config = TrainConfig(dataset="digits", model="cnn11", model_kwargs={"width": 0.25},
                         method="mixup", method_kwargs={"off_epoch": 1}, subset_per_class=4, epochs=2,
                         batch_size=20)
    trainer = Trainer(config, out=tmp_path, progress=False, store=False)
    trainer.run()
    assert trainer.method.epoch == 1 and trainer.method.last is None  # epoch 1 trained unmixed
    method = mixlab.create("cutmix", num_classes=5, off_epoch=2)
    x, y = batch()
    method.set_epoch(1)
    assert not torch.equal(method(x, y)[0], x)
    method.set_epoch(2)
    assert torch.equal(method(x, y)[0], x)


def test_mixup_cutmix_switches_per_batch():
    x, y = batch()
    mixer = mixlab.create("mixup-cutmix", num_classes=5, seed=0)
    kinds = []
    for _ in range(100):
        x_mix, _ = mixer(x, y)
        perm, lam = mixer.last.index, mixer.last.lam
        kinds.append(mixer.last_kind)
        if mixer.last_kind == "cutmix":  # every pixel from one of the pair
            assert bool(((x_mix == x) | (x_mix == x[perm])).all())
        else:
            torch.testing.assert_close(x_mix, lam * x + (1 - lam) * x[perm])
    assert 30 < kinds.count("cutmix") < 70 and set(kinds) == {"mixup", "cutmix"}
    only_cutmix = mixlab.create("mixup-cutmix", num_classes=5, switch_prob=1.0)
    for _ in range(5):
        only_cutmix(x, y)
        assert only_cutmix.last_kind == "cutmix"


def test_plain_loop_recipe():
    """A plain PyTorch loop: the mixer in the DataLoader, soft targets into the loss."""
    torch.manual_seed(0)
    x, y = batch(32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 5))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mixer = mixlab.create("mixup-cutmix", num_classes=5, label_smoothing=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, collate_fn=mixlab.MixCollate(mixer))
    losses = []
    for epoch in range(3):
        mixer.set_epoch(epoch)
        for xb, tb in loader:
            loss = mixlab.soft_cross_entropy(model(xb), tb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    assert all(l == l for l in losses) and len(losses) == 12


def test_lightning_module_and_callback_two_steps(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from mixlab.train.lightning import MixCallback, MixModule
    from user_models import TVResNet18

    x, y = batch(16, num_classes=3)
    x = torch.nn.functional.interpolate(x, size=32)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    user_model = TVResNet18(num_classes=3, width=8)
    before = [p.detach().clone() for p in user_model.parameters()]
    module = MixModule(user_model, "manifold", num_classes=3, lr=0.05)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader)
    assert trainer.global_step == 2 and module.method.epoch == 0
    assert all(not torch.equal(p, q) for p, q in zip(user_model.parameters(), before))  # trained in place

    class Own(pl.LightningModule):  # a user's own module: cross-entropy on whatever targets it gets
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append(batch[1].shape)
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    own = Own()
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[MixCallback("cutmix", num_classes=3)])
    trainer.fit(own, loader)
    assert own.seen == [torch.Size([8, 3])] * 2  # soft targets reached the user's training_step
