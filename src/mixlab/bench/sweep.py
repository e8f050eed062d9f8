"""Sweep throughput (``mixlab perf --sweep``, issue 20): runs per hour of one sweep (a protocol's methods x seeds)
trained one after another and ``jobs`` at a time (:func:`mixlab.train.train_missing`), measured in the same
invocation into two temporary stores, with the machine's load average around each, and the check that both gave
the same numbers.

Goal (issue 20): ``automix-mnist-sub-quick`` x {erm, mixup, opttransmix} x 3 seeds at least 1.8x faster with
``--jobs 2`` than sequentially on 2 cores.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

#: issue 20's sweep and goal
SWEEP_PROTOCOL = "automix-mnist-sub-quick"
SWEEP_METHODS = ("erm", "mixup", "opttransmix")
SWEEP_TRIALS = 3
SWEEP_GOAL = 1.8


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def sweep_configs(protocol: str = SWEEP_PROTOCOL, methods=SWEEP_METHODS, trials: int = SWEEP_TRIALS,
                  epochs: int | None = None, device: str = "cpu", threads: int | None = None) -> list:
    """The sweep's configs: every (method, seed) of ``protocol`` (``epochs`` overrides its length)."""
    from ..checks import positive_int
    from ..protocols import get_protocol

    positive_int("trials", trials)
    positive_int("epochs", epochs, none="the protocol's")
    overrides = {"device": device}
    if epochs is not None:
        overrides["epochs"] = epochs
    if threads is not None:
        overrides["threads"] = threads
    p = get_protocol(protocol)
    return [c for method in methods for seed in range(trials) for c in p.train_configs(method, seed, **overrides)]


def cpu_seconds() -> float | None:
    """CPU seconds (user + system) of this process and of its children that have ended (None without
    ``resource``, e.g. on Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def time_sweep(configs: list, out: str | Path, jobs: int, data_dir: str | None = None, log=print) -> dict:
    """Train ``configs`` into the empty store ``out``, ``jobs`` at a time; wall time, runs per hour, CPU seconds
    (this process and its worker processes: what the machine's load does not inflate much, so it shows what the
    workers cost beyond the runs), the load average before and after, and each run's test error (None if it
    diverged)."""
    from ..results import ResultsStore
    from ..train import train_missing

    before, cpu0 = load_average(), cpu_seconds()
    t0 = time.perf_counter()
    ids, locked = train_missing(configs, out, data_dir, progress=False, log=log, jobs=jobs)
    wall = time.perf_counter() - t0
    cpu = None if cpu0 is None else cpu_seconds() - cpu0
    if locked:
        raise RuntimeError(f"{len(locked)} run(s) of the timed sweep were locked by another process; use a fresh --out")
    store = ResultsStore(out)
    return {"jobs": jobs, "runs": len(ids), "wall_seconds": wall, "runs_per_hour": 3600.0 * len(ids) / wall,
            "cpu_seconds": cpu,
            "load_before": before, "load_after": load_average(),
            "test_errors": {rid: store.get_run(rid)["test_error"] for rid in ids}}


def sweep_throughput(protocol: str = SWEEP_PROTOCOL, methods=SWEEP_METHODS, trials: int = SWEEP_TRIALS,
                     jobs: int = 2, epochs: int | None = None, data_dir: str | None = None, device: str = "cpu",
                     threads: int | None = None, log=print) -> dict:
    """The sweep trained sequentially, then ``jobs`` at a time, each into its own temporary store (nothing reused:
    OptTransMix builds its barycenter cache in each); ``speedup`` = runs per hour with ``jobs`` / sequential.
    ``same_numbers``: both gave every run the same test error (they must: same run ids, same numbers)."""
    from ..checks import positive_int
    from ..config import fit_to_jobs, threads_per_job
    from ..machine import machine

    positive_int("jobs", jobs)
    methods = tuple(methods)
    configs = [fit_to_jobs(c, jobs) for c in sweep_configs(protocol, methods, trials, epochs, device, threads)]
    log(f"sweep: {protocol} x {', '.join(methods)} x {trials} seed(s) = {len(configs)} runs"
        + (f", {epochs} epoch(s) each" if epochs else "") + f"; sequential, then {jobs} at a time")
    result = {"protocol": protocol, "methods": list(methods), "trials": trials, "epochs": epochs or
              configs[0].epochs, "device": device, "threads_per_run": configs[0].identity().get("threads"),
              "threads_per_job": threads_per_job(jobs), "machine": machine(),
              "goal": SWEEP_GOAL if (protocol, methods, trials, jobs, epochs) == (SWEEP_PROTOCOL, SWEEP_METHODS,
                                                                                 SWEEP_TRIALS, 2, None) else None}
    with tempfile.TemporaryDirectory(prefix="mixlab-sweep-") as tmp:
        result["sequential"] = time_sweep(configs, Path(tmp) / "sequential", 1, data_dir, log)
        result["parallel"] = time_sweep(configs, Path(tmp) / f"jobs{jobs}", jobs, data_dir, log)
    seq, par = result["sequential"], result["parallel"]
    result["speedup"] = par["runs_per_hour"] / seq["runs_per_hour"]
    result["same_numbers"] = seq["test_errors"] == par["test_errors"]
    return result
