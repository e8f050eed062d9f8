"""Wall-clock timing on CPU and GPU: a call timed with the device synchronised around it, medians of repeats."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def synchronize(device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    import torch

    if device is not None and getattr(device, "type", device) == "cuda":
        torch.cuda.synchronize(device)


def timed_call(fn: Callable[[], Any], device=None) -> tuple[Any, float]:
    """``(fn(), seconds)``, the device synchronised before and after."""
    synchronize(device)
    t0 = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - t0


def timed(fn: Callable[[], Any], device=None) -> float:
    """Seconds of one ``fn()`` (see :func:`timed_call`)."""
    return timed_call(fn, device)[1]


def median_seconds(fn: Callable[[], Any], repeats: int, device=None, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    return statistics.median(timed(fn, device) for _ in range(max(1, repeats)))


def median_ms(values) -> float:
    return 1000.0 * statistics.median(values)
