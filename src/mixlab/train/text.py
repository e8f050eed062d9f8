"""Training on the sentence-classification datasets (:mod:`mixlab.data.text`).

:class:`TextTrainer` overrides the engine's hooks: sentences are tokenised once (Kim's tokeniser + a vocabulary
of the training split only, or a pre-trained model's WordPiece), kept as padded LongTensors on the device, and
each batch is cut to its own longest sentence (at least the model's ``min_length``). Training counts optimiser
steps when ``max_steps`` is set (the AMP paper: 8,000 steps of batch 50); with ``eval_steps`` it evaluates dev
and test every N steps and reports, besides the final-step error (``test_error``):

* ``dev_selected_test_error``: test error at the evaluated step with the lowest dev error (earliest on ties);
* ``best_test_error_over_steps``: the lowest test error over the evaluated steps. Selected on the test set, so
  optimistic: it is what the AMP code reports ("max test acc"), offered to compare with the paper like for like.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..data.subsets import per_class_indices
from ..data.text import Vocab, kim_tokenize, pad_ids
from ..methods.base import ERM, InputMixer, as_targets, soft_cross_entropy
from ..metrics import topk_correct
from ..registry import DATASETS, MODELS
from .engine import Trainer


class TextTrainer(Trainer):
    """The engine for text datasets; same arguments and results as :class:`~mixlab.train.engine.Trainer`."""

    def load_data(self) -> None:
        c, dev = self.config, self.device
        loader = DATASETS.get(c.dataset)
        opts = {"subset_seed": c.seed, **c.data_kwargs}
        train = loader("train", root=self.data_dir, **opts)
        test = loader("test", root=self.data_dir, **opts)
        try:
            dev_data = loader("dev", root=self.data_dir, **opts)
        except ValueError:  # no dev split (pass data_kwargs dev_fraction=0.1 for a hold-out)
            dev_data = None
        if c.subset_per_class:
            idx = per_class_indices(train.y, c.subset_per_class, seed=c.seed, num_classes=train.num_classes)
            train = train.subset(idx, f"{c.subset_per_class} per class from {train.note}")
        if c.test_limit:
            n = min(c.test_limit, len(test))
            test = test.subset(torch.arange(n), f"first {n} of {test.note}")
        self.train_data, self.test_data, self.dev_data = train, test, dev_data
        self.num_classes = train.num_classes
        self.multilabel = False
        self.loss_fn = soft_cross_entropy
        self.augment = None

        model_cls = MODELS.get(c.model)
        if getattr(model_cls, "pretrained_tokenizer", False):
            tokenizer = model_cls.make_tokenizer(**c.model_kwargs)
            self.vocab = None
            self.pad_id = tokenizer.pad

            def encode(texts):
                return [tokenizer(s) for s in texts]
        else:
            self.vocab = Vocab([kim_tokenize(s) for s in train.text])  # training split only
            self.pad_id = Vocab.PAD

            def encode(texts):
                return self.vocab.encode([kim_tokenize(s) for s in texts])

        def tensors(data):
            ids, lengths = pad_ids(encode(data.text), pad=self.pad_id)
            return ids.to(dev), lengths, data.y.to(dev)

        self.x_train, self.len_train, self.y_train = tensors(train)
        self.t_train = as_targets(self.y_train, self.num_classes, torch.float32)
        self.x_test, self.len_test, self.y_test = tensors(test)
        if dev_data is not None:
            self.x_dev, self.len_dev, self.y_dev = tensors(dev_data)

    def build_model(self) -> nn.Module:
        c = self.config
        vocab_size = len(self.vocab) if self.vocab is not None else None
        return MODELS.create(c.model, num_classes=self.num_classes, vocab_size=vocab_size,
                             **c.model_kwargs).to(self.device)

    def setup(self) -> None:
        if self.world_size > 1:
            raise RuntimeError("text runs do not shard their data under torchrun yet; run them in one process")
        super().setup()
        inner = getattr(self.method, "inner", self.method)
        if isinstance(inner, InputMixer) and not isinstance(inner, ERM):
            raise TypeError(f"{self.config.method} mixes inputs, but text inputs are token ids: use wordmixup "
                            f"(word embeddings) or sentmixup (sentence vector), or amp+ on either")

    # ----------------------------------------------------------------------------------------- batches
    def cut(self, x: Tensor, lengths: Tensor, idx: Tensor) -> Tensor:
        """Rows ``idx`` (CPU) of padded ids, cut to the batch's longest sentence (>= the model's min_length)."""
        width = max(int(lengths[idx].max()), getattr(self.model, "min_length", 1))
        rows = x[idx.to(x.device, non_blocking=True), :min(width, x.shape[1])]
        if rows.shape[1] < width:
            rows = nn.functional.pad(rows, (0, width - rows.shape[1]), value=self.pad_id)
        return rows

    def train_batch(self, idx: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.cut(self.x_train, self.len_train, idx)

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self.len_train), self.config.batch_size
        return n // b + (1 if n % b >= 2 else 0)  # a final batch of one cannot be mixed

    def total_epochs(self) -> int:
        c = self.config
        return math.ceil(c.max_steps / self.steps_per_epoch) if c.max_steps else c.epochs

    def samples_seen(self) -> int:
        c, n = self.config, len(self.len_train)
        return min(c.max_steps * c.batch_size, n * self.total_epochs()) if c.max_steps else n * c.epochs

    # ---------------------------------------------------------------------------------------- training
    def train_epoch(self, epoch: int) -> Tensor:
        c, dev = self.config, self.device
        data_gen = self.begin_epoch(epoch)
        order = torch.randperm(len(self.len_train), generator=data_gen)
        self.model.train()
        self.method.train()
        for j in range(self.steps_per_epoch):
            step = epoch * self.steps_per_epoch + j + 1
            if c.max_steps and step > c.max_steps:
                break
            idx = order[j * c.batch_size:(j + 1) * c.batch_size]
            x = self.train_batch(idx)
            loss = self.step_loss(x, self.t_train[idx.to(dev)])
            self.optimizer_step(loss)
            self.record_loss(loss)
            if c.eval_steps and step % c.eval_steps == 0:
                self.history.append({"step": step, **self.evaluate_splits()})
                self.model.train()
        return self.epoch_loss()

    def steps_before(self, epoch: int) -> int:
        return epoch * self.steps_per_epoch

    # -------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def error(self, x: Tensor, lengths: Tensor, y: Tensor, batch_size: int = 500) -> tuple[float, float]:
        """(error %, mean CE) of the model on padded ids."""
        self.model.eval()
        wrong = torch.zeros((), device=x.device)
        ce = torch.zeros((), device=x.device)
        for i in range(0, len(lengths), batch_size):
            idx = torch.arange(i, min(i + batch_size, len(lengths)))
            logits = self.model(self.cut(x, lengths, idx)).float()
            yb = y[i:i + batch_size]
            wrong += len(yb) - topk_correct(logits, yb, (1,))[0]
            ce += nn.functional.cross_entropy(logits, yb, reduction="sum")
        n = len(lengths)
        return 100.0 * float(wrong) / n, float(ce) / n

    def evaluate_splits(self) -> dict:
        err, loss = self.error(self.x_test, self.len_test, self.y_test)
        out = {"test_error": err, "test_loss": loss}
        if self.dev_data is not None:
            out["dev_error"] = self.error(self.x_dev, self.len_dev, self.y_dev)[0]
        return out

    def evaluate(self) -> dict:
        """Final-step test error plus, from the periodic evaluations, the dev-selected and best-step errors."""
        final = self.evaluate_splits()
        steps_done = min(self.config.max_steps or 10**12, self.total_epochs() * self.steps_per_epoch)
        points = [r for r in self.history if "step" in r and r["step"] != steps_done] + [{"step": steps_done, **final}]
        result = {**final, "test_top5_error": None, "test_size": len(self.len_test), "steps": steps_done,
                  "vocab_size": len(self.vocab) if self.vocab is not None else None,
                  "best_test_error_over_steps": min(p["test_error"] for p in points),
                  "best_test_error_note": "min over evaluated steps, selected on test (as the AMP code); optimistic"}
        if self.dev_data is not None:
            best = min(points, key=lambda p: (p["dev_error"], p["step"]))
            result.update(dev_selected_test_error=best["test_error"], dev_selected_step=best["step"],
                          dev_size=len(self.len_dev))
        else:
            result.update(dev_selected_test_error=None, dev_selected_step=None)
        return result
