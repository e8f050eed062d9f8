"""Loading a trained run and running an evaluation on it (results go to the store's ``evals`` table)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..config import TrainConfig
from ..registry import check_options, signature_options
from ..results import ResultsStore
from ..seeding import derive_seed
from ..train import make_trainer
from ..train.engine import read_checkpoint
from ..train.evaluation import predict  # noqa: F401  (the evaluations run models through it)


def load_run(out: str | Path, run_id: str, device: str = "cpu", data_dir: str | None = None):
    """Rebuild a finished (or checkpointed) run for evaluation: its trainer with data, augmentation and the
    trained model loaded from ``<out>/runs/<run_id>/checkpoint.pt`` (model in eval mode).

    The returned trainer exposes ``model``, ``config``, ``x_test``, ``y_test``, ``augment``, ``num_classes``,
    ``train_data``, ``test_data`` and ``multilabel``; nothing is trained.
    """
    path = Path(out) / "runs" / run_id / "checkpoint.pt"
    run = ResultsStore(out).get_run(run_id) if (Path(out) / "results.db").exists() else None
    if run and run.get("status", "ok") != "ok":
        m = run["metrics"]
        raise ValueError(f"run {run_id} {run['status']} (non-finite training loss at epoch "
                         f"{m.get('diverged_epoch')}, step {m.get('diverged_step')}): there is no trained model "
                         f"to evaluate")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}; train the run first (mixlab train / bench / reproduce "
                                f"with --out {out})")
    state = read_checkpoint(path)
    config = TrainConfig.from_identity(state["config"])
    config.device = device
    trainer = make_trainer(config, out=out, data_dir=data_dir, progress=False, store=False)
    trainer.load_data()
    torch.manual_seed(derive_seed(config.seed, "init"))
    trainer.model = trainer.build_model()
    trainer.model.load_state_dict(state["model"])
    trainer.model.eval()
    trainer.epochs_done = state["epoch"] + 1
    return trainer


def test_transform(trainer) -> Callable[[Tensor], Tensor]:
    return lambda xb: trainer.augment(xb, train=False)


def eval_dir(out: str | Path, run_id: str) -> Path:
    path = Path(out) / "runs" / run_id / "eval"
    path.mkdir(parents=True, exist_ok=True)
    return path


#: kind -> "module:function"; each function is ``fn(trainer, out_dir, **options) -> metrics dict``
EVALS: dict[str, str] = {
    "accuracy": "mixlab.eval.classification:run_accuracy",
    "calibration": "mixlab.eval.classification:run_calibration",
    "multilabel": "mixlab.eval.multilabel:run_multilabel",
    "openset": "mixlab.eval.openset:run_openset",
    "noise": "mixlab.eval.noise:run_noise",
    "ood": "mixlab.eval.ood:run_ood",
    "align-uniform": "mixlab.eval.embedding:run_align_uniform",
    "amp-step": "mixlab.eval.amp:run_amp_step",
    "generator-vs-barycenter": "mixlab.eval.generator:run_generator_vs_barycenter",
}


def get_eval(kind: str) -> Callable:
    import importlib

    if kind not in EVALS:
        raise KeyError(f"unknown evaluation {kind!r}; available: {', '.join(EVALS)}")
    module, _, attr = EVALS[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def stored_eval(out: str | Path, run_id: str, kind: str) -> dict | None:
    for e in ResultsStore(out).evals(run_id):
        if e["kind"] == kind:
            return e["metrics"]
    return None


def run_eval(out: str | Path, run_id: str, kind: str, data_dir: str | None = None, device: str = "cpu",
             force: bool = False, **options) -> dict:
    """Evaluate a run and write the metrics to ``<out>/results.db`` (``evals`` table, key ``(run_id, kind)``).

    A stored result is returned as is unless ``force`` (so sweeps resume); figures go to
    ``<out>/runs/<run_id>/eval/``.
    """
    fn = get_eval(kind)
    params = signature_options(fn, skip=("trainer", "out_dir"))
    check_options(f"evaluation {kind!r}", params, options)  # before loading the run
    if not force:
        done = stored_eval(out, run_id, kind)
        if done is not None:
            return done
    trainer = load_run(out, run_id, device=device, data_dir=data_dir)
    t0 = time.perf_counter()
    metrics = fn(trainer, eval_dir(out, run_id), **options)
    metrics = {"kind": kind, "run_id": run_id, **metrics, "eval_seconds": time.perf_counter() - t0}
    ResultsStore(out).add_eval(run_id, kind, metrics)
    return metrics
