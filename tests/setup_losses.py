"""Losses on a fixed batch after ``setup`` for the methods with a setup step (OptTransMix's cache, AutoMix's
generator, TransformMix's teacher and search), through the engine on a tiny digits run.

``python tests/setup_losses.py OUT.json`` writes them; ``tests/data/setup_losses.json`` holds the values the
code gave before methods were set up through a context instead of the Trainer (main at 0354e32), and
``test_layers.py::test_setup_keeps_the_numbers`` checks that today's code gives the same.
"""
from __future__ import annotations

import json
import sys
import tempfile

import torch

SETUPS = {
    "opttransmix": {"per_image": 1, "max_iter": 50, "chunk": 64},
    "opttransmix+mixup": {"per_image": 1, "max_iter": 50, "chunk": 64},
    "automix-zhu": {"widths": [8, 8, 8, 8, 8]},
    "transformmix": {"teacher_epochs": 10, "search_epochs": 2, "search_batch_size": 32},
}


def setup_losses(out: str) -> dict:
    from mixlab.train import TrainConfig, make_trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = {}
        for method, kwargs in SETUPS.items():
            config = TrainConfig(dataset="digits", model="cnn11", method=method, epochs=1, batch_size=32,
                                 subset_per_class=20, crop_padding=1, flip=True, model_kwargs={"width": 0.125},
                                 method_kwargs=kwargs)
            trainer = make_trainer(config, out=out, progress=False, store=False)
            trainer.setup()
            idx = torch.arange(16)
            x = trainer.train_batch(idx, torch.Generator().manual_seed(5))
            trainer.method.reseed(7)
            trainer.model.train()
            trainer.method.train()
            loss = trainer.method.training_loss(trainer.model, x, trainer.t_train[idx], trainer.loss_fn)
            loss.backward()
            grad = sum(float(p.grad.double().abs().sum()) for p in trainer.model.parameters() if p.grad is not None)
            result[method] = {"loss": float(loss.detach()), "model_grad_l1": grad}
            if method == "transformmix":
                result[method]["search_losses"] = trainer.method.module.read(
                    next(iter((trainer.out / "transformmix" / "modules").glob("*/module.pt"))))["meta"]["losses"]
                result[method]["teacher_temperature"] = trainer.method.fitted_temperature
        return result
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        values = setup_losses(tmp)
    text = json.dumps(values, indent=1)
    print(text)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            f.write(text + "\n")
