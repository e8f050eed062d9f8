"""PyTorch Lightning: mixlab's methods in a Lightning training loop (optional extra ``pip install mixlab[lightning]``).

Two ways in:

* :class:`MixModule`: a ``LightningModule`` around any model and any method (input, feature-space or learned);
  the training step is ``method.training_loss(model, x, y)``, so a feature-space method runs on the model's
  stages (a plain ``nn.Module`` is staged with :func:`mixlab.stage`).
* :class:`MixCallback`: keep your own ``LightningModule``; an input mixer mixes each training batch before your
  ``training_step`` sees it (the targets become ``(B, C)`` probabilities, which ``F.cross_entropy`` accepts).

Both call ``method.set_epoch`` at each epoch (``off_epoch``) and reseed the method from its seed and the epoch,
so a run repeats with the same seed.
"""
from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ..methods.base import InputMixer, Method, parameter_groups
from ..metrics import topk_correct
from ..seeding import derive_seed
from ..models.adapter import stage
from ..registry import METHODS


def _method(method: str | Method, num_classes: int | None, **kwargs) -> Method:
    if isinstance(method, Method):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} go to the method; pass it by name to use them")
        return method
    return METHODS.create(method, num_classes=num_classes, **kwargs)


def _begin_epoch(method: Method, epoch: int) -> None:
    method.reseed(derive_seed(method.seed, epoch, "lightning"))
    method.set_epoch(epoch)


class MixModule(pl.LightningModule):
    """Train ``model`` with a mixlab ``method`` in Lightning.

    Args:
        model: the network; staged with :func:`mixlab.stage` when the method needs stages.
        method: a registry name (``"alignmix"``) or a method instance.
        num_classes: classes of integer labels.
        lr, momentum, weight_decay: SGD (the method's own trainable parameters, e.g. AutoMix's generator, are
            optimised with the model's); override :meth:`configure_optimizers` for another optimiser.
        **method_kwargs: options of the method (by name).
    Batches are ``(x, y)`` with integer labels ``(B,)`` or ``(B, C)`` targets. Validation batches log
    ``val_loss`` and ``val_error`` (percent, top-1) of the plain model.
    """

    def __init__(self, model: nn.Module, method: str | Method = "mixup", num_classes: int | None = None,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, **method_kwargs):
        super().__init__()
        self.method = _method(method, num_classes, **method_kwargs)
        self.model = stage(model) if self.method.needs_stages else model
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        _begin_epoch(self.method, self.current_epoch)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        loss = self.method.training_loss(self.model, x, y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        logits = self.model(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_error", 100.0 * (1 - topk_correct(logits, y, (1,))[0].float() / len(y)))

    def configure_optimizers(self):
        params = parameter_groups(self.model, self.method, self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


class MixCallback(pl.Callback):
    """Mix every training batch of your own ``LightningModule`` with an input mixer, in place of the batch.

    ``trainer = Trainer(callbacks=[MixCallback("cutmix", num_classes=10)])``: the module's ``training_step``
    receives ``[x_mix, y_mix]`` with ``(B, C)`` soft targets (``F.cross_entropy(logits, y_mix)`` takes them).
    Batches must be lists ``[x, y, ...]`` (what the default collate makes of ``(x, y)`` samples).
    """

    def __init__(self, mixer: str | InputMixer = "mixup", num_classes: int | None = None, **mixer_kwargs):
        super().__init__()
        self.mixer = _method(mixer, num_classes, **mixer_kwargs)
        if not isinstance(self.mixer, InputMixer):
            raise TypeError(f"MixCallback mixes input batches; {type(self.mixer).__name__} mixes inside the model: "
                            f"use MixModule for it")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _begin_epoch(self.mixer, trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not isinstance(batch, list) or len(batch) < 2:
            raise TypeError(f"MixCallback mixes list batches [x, y, ...]; got {type(batch).__name__}: return lists "
                            f"from the collate function, or use mixlab.MixCollate in the DataLoader instead")
        self.mixer.to(batch[0].device)
        batch[0], batch[1] = self.mixer(batch[0], batch[1])
