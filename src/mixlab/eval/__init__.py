"""Evaluations of trained runs: each a function here and a ``mixlab eval KIND --run ID`` command.

* :mod:`mixlab.metrics` (re-exported here): top-k error, ECE, AUROC, average precision, mAP, OOD scores, alignment / uniformity.
* :mod:`.classification` (accuracy, calibration), :mod:`.multilabel`, :mod:`.openset`, :mod:`.noise`,
  :mod:`.ood`, :mod:`.embedding` (align-uniform): run-level evaluations ``fn(trainer, out_dir, **options)``.
* :func:`load_run` rebuilds a trained run from ``<out>/runs/<run_id>/checkpoint.pt``; :func:`run_eval` evaluates
  it and stores the result (``ResultsStore.add_eval``).
"""
from .common import EVALS, get_eval, load_run, predict, run_eval, stored_eval
from ..metrics import (alignment, auroc, average_precision, expected_calibration_error, mean_average_precision,
                      ood_scores, topk_error, uniformity)

__all__ = ["EVALS", "get_eval", "load_run", "predict", "run_eval", "stored_eval", "alignment", "auroc",
           "average_precision", "expected_calibration_error", "mean_average_precision", "ood_scores", "topk_error",
           "uniformity"]
