"""Running configurations: one run, and a sweep that trains only what is missing, one run after another, ``jobs`` at
once in worker processes, or as Ray tasks (:func:`train_missing`). The trainer for a config: :mod:`.factory`."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from .. import distributed as ddp
from ..checks import positive_int
from ..config import TrainConfig, fit_to_jobs, threads_per_job
from ..results import ResultsStore
from ..results.store import format_options
from .engine import outcome, run_unless_locked
from .factory import make_trainer, trainer_class

__all__ = ["EXECUTORS", "make_trainer", "outcome", "train", "train_missing", "train_side_by_side", "trainer_class"]


def train(config: TrainConfig, **kwargs) -> dict:
    """Train ``config`` (see :class:`Trainer` for keyword arguments) and return its result."""
    resume = kwargs.pop("resume", False)
    return make_trainer(config, **kwargs).run(resume=resume)


#: how train_missing trains: in this machine's processes, or as tasks on a Ray cluster
EXECUTORS = ("local", "ray")


def train_missing(configs: Iterable[TrainConfig], out: str | Path, data_dir: str | None = None,
                  progress: bool | None = None, log: Callable[[str], None] = print,
                  label: Callable[[TrainConfig, int, int], str] | None = None,
                  say_done: bool = False, jobs: int = 1, executor: str = "local",
                  address: str | None = None) -> tuple[list[str], set[str]]:
    """Train every config whose run is not in ``<out>/results.db`` yet (resuming from its checkpoint); the rest is
    left as stored. ``label(config, i, n)`` names the ``i``-th of ``n`` runs to train in the log lines (default:
    protocol, method and seed); ``say_done`` logs the runs found already too.

    ``jobs``: runs trained at once, each in its own worker process (:func:`train_side_by_side`), a line logged as
    each one finishes; on a GPU they share the device. A CPU run whose default threads would not fit beside the
    others gets fewer (:func:`mixlab.config.fit_to_jobs`; the run id follows its threads, never ``jobs``): the
    one-thread runs of the CPU protocols keep their ids, so the same runs and numbers as one after another.
    ``executor="ray"``: the runs as tasks on a Ray cluster (``address``, else ``$RAY_ADDRESS``, else a local
    instance; :mod:`mixlab.train.cluster`), results and checkpoints coming back into ``out``.

    Returns ``(run_ids, locked)``: the run id of every config, in order (as its trainer names it: under torchrun
    it records the world size), and those skipped because another process is training them right now (a second
    sweep on the same ``out``): they are missing still.
    """
    positive_int("jobs", jobs)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)}")
    if jobs > 1 and ddp.env_world_size() > 1:
        raise ValueError(f"jobs={jobs} under torchrun: each run already spans the launched processes; use jobs=1")
    configs = [fit_to_jobs(c, jobs) for c in configs]
    store = ResultsStore(out)
    trainers = [make_trainer(c, out=out, data_dir=data_dir, progress=progress) for c in configs]
    todo = list({t.run_id: t for t in trainers if not store.has_run(t.run_id)}.values())  # each run once
    label = label or default_label
    if say_done:
        for t in trainers:
            if t not in todo:
                log(f"{label(t.config, 0, len(todo))}: done already ({t.run_id})")
    texts = {t.run_id: label(t.config, i, len(todo)) for i, t in enumerate(todo, 1)}
    if executor == "ray" and todo:
        from .cluster import train_on_ray

        locked = train_on_ray([t.config for t in todo], [texts[t.run_id] for t in todo], out, jobs, data_dir, log,
                              address)
    elif jobs > 1 and len(todo) > 1:
        locked = train_side_by_side([t.config for t in todo], [texts[t.run_id] for t in todo], out, jobs,
                                    data_dir, progress, log)
    else:
        locked = set()
        for trainer in todo:
            result = run_unless_locked(trainer, log, texts[trainer.run_id])
            if result is None:
                locked.add(trainer.run_id)
            else:
                log(f"{texts[trainer.run_id]}: {outcome(result)}")
    return [t.run_id for t in trainers], locked


def default_label(config: TrainConfig, i: int, n: int) -> str:
    """``  [i/n] protocol method (options) seed s``: the options tell apart two rows of one method."""
    options = format_options(config.method_kwargs)
    return f"  [{i}/{n}] {config.protocol} {config.method}{f' ({options})' if options else ''} seed {config.seed}"


def train_side_by_side(configs: list[TrainConfig], texts: list[str], out: str | Path, jobs: int,
                       data_dir: str | None = None, progress: bool | None = None,
                       log: Callable[[str], None] = print) -> set[str]:
    """Train ``configs`` (distinct runs, none stored yet), ``jobs`` at once in a pool of spawned worker processes,
    logging ``texts[i]`` with each run's outcome as it finishes; return the run ids left locked by another process.

    Each worker trains one run at a time exactly as :func:`train_missing` does one after another (the run stores
    itself in ``<out>/results.db`` and checkpoints every epoch), with :func:`~mixlab.config.threads_per_job`
    torch threads for its own work outside runs (a CPU run sets its own). Progress: a line now and then per run
    (no bars: several would overwrite each other). A run locked by one of its siblings (the sweep's ``erm`` run of
    a seed while a TransformMix run trains it as its teacher) is tried again once the others are done, and then
    finds its checkpoint at the end; one that stays locked is another sweep's. Ctrl-C (the parent's alone: workers ignore SIGINT) or a failing run stops every
    worker; what finished is stored, what was in progress keeps its last finished epoch in its checkpoint (the
    same command goes on from there), and the exception is raised again."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    worker_progress = False if progress is False else "lines"
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(configs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads_per_job(jobs),))
    log(f"training {len(configs)} runs, {min(jobs, len(configs))} at a time (one worker process each)")
    todo, locked = list(zip(configs, texts)), set()
    try:
        while todo:
            futures = {pool.submit(_train_one, config, out, data_dir, worker_progress, text): (config, text)
                       for config, text in todo}
            again, finished = [], 0
            for future in as_completed(futures):
                config, text = futures[future]
                try:
                    result, lines = future.result()
                except BaseException as error:
                    log(f"{text}: FAILED ({type(error).__name__}: {error}); stopping the other runs (their finished "
                        f"epochs are in their checkpoints)")
                    raise
                if result is None:  # its lock is held: by a sibling (tried again) or by another sweep
                    again.append((config, text, lines))
                    continue
                finished += 1
                for line in lines:
                    log(line)
                log(f"{text}: {outcome(result)}")
            if not finished:  # nobody in this sweep holds their locks: another process trains them
                for config, text, lines in again:
                    for line in lines:
                        log(line)
                    locked.add(config.run_id())
                break
            todo = [(config, text) for config, text, _ in again]
            if todo:
                log(f"{len(todo)} run(s) were locked by a run of this sweep; trying them again")
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            log("interrupted: finished runs are stored; runs in progress keep their last finished epoch in their "
                "checkpoints (the same command goes on from there)")
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return locked


def _start_worker(threads: int) -> None:
    """A worker process of :func:`train_side_by_side`: Ctrl-C is left to the parent, which stops the workers."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _train_one(config: TrainConfig, out: str | Path, data_dir: str | None, progress, text: str):
    """In a worker: :func:`run_unless_locked` on ``config``; its result (None: locked) and the lines it logged."""
    lines: list[str] = []
    result = run_unless_locked(make_trainer(config, out=out, data_dir=data_dir, progress=progress), lines.append,
                               text)
    return result, lines


def _stop_workers(pool) -> None:
    """Terminate the pool's worker processes now (a run in progress loses only its unfinished epoch)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
