"""Running a reproduction: whether each cell can run (and why not), the runs and evaluations it needs, training what
is missing (:func:`run_reproduction`) and the dry run that only says what would run (:func:`dry_run`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..checks import positive_int
from ..machine import machine
from ..results import ResultsStore, describe_diverged
from .report import log_invocation, write_report
from .spec import Column, Reproduction, Row, get_reproduction

# ------------------------------------------------------------------------------------------ availability
#: methods that papers' tables name and mixlab does not implement, with the documented reason (shown in the table)
NOT_IMPLEMENTED = {
    "stylecutmix": "method not implemented: StyleCutMix (AlignMixup paper's comparison) is not in mixlab and no "
                   "issue plans it",
    "alignmix-ae": "method not implemented: AlignMixup/AE (AlignMixup with an autoencoder) is not in mixlab and no "
                   "issue plans it",
    "nonlinear-mixup": "method not implemented: Non-linear Mixup (Guo 2020) is cited by the AMP paper, not run "
                       "there; it is not in mixlab and no issue plans it",
}


def method_unavailable(name: str, kwargs: dict) -> tuple[str, bool] | None:
    """None if ``name`` is registered and accepts ``kwargs``, else ``(reason, documented)`` for the report."""
    from ..registry import METHODS

    if name not in METHODS:
        if name in NOT_IMPLEMENTED:
            return NOT_IMPLEMENTED[name], True
        return f"method `{name}` not available in this build", False
    try:
        METHODS.create(name, num_classes=10, **kwargs)
    except (TypeError, ValueError) as error:
        return f"method `{name}` in this build does not accept {kwargs} ({error})", False
    except Exception:  # noqa: BLE001  (construction may need data; being registered is enough then)
        return None
    return None


def model_unavailable(name: str) -> str | None:
    """Why a registered model cannot be built here (its module's ``unavailable_reason()``, e.g. MiniLM's weights
    are an optional extra), else None."""
    import sys

    from ..registry import MODELS

    reason = getattr(sys.modules[MODELS.get(name).__module__], "unavailable_reason", None)
    return reason() if reason is not None else None


def dataset_state(name: str, data_dir: str | None) -> str:
    """``staged`` (loads from the data root), ``download`` (missing, fetched from its official source on first
    use) or ``missing`` (not staged, and mixlab cannot download it)."""
    from ..data import load_dataset
    from ..data.files import DatasetMissingError

    try:
        load_dataset(name, "train", data_dir, download=False)
        return "staged"
    except DatasetMissingError as error:
        return "download" if error.downloadable else "missing"
    except Exception:  # noqa: BLE001  (a corrupt file: the run says which)
        return "missing"


@dataclass
class Cell:
    """What one (row, column) resolved to, and its numbers once run."""

    protocol: str | None = None
    unavailable: str | None = None  # why no number (shown in the table)
    documented: bool = False  # ``unavailable`` is a documented reason (not a target that fails to resolve)
    note: str = ""  # e.g. a fallback dataset
    run_ids: list = field(default_factory=list)
    values: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    run_seconds: dict = field(default_factory=dict)  # run id -> training seconds
    diverged: list = field(default_factory=list)  # diverged_runs() entries: no value, listed in a footnote
    trials: list = field(default_factory=list)  # per seed, its run ids (one per fold on a cross-validated protocol)
    options: dict = field(default_factory=dict)  # the method options its runs train with (row's + protocol's)


def resolve(row: Row, col: Column, quick: bool, data_dir: str | None, trials: int | None,
            state: Callable[[str], str]) -> Cell:
    """What a (row, column) cell runs, or why it cannot; ``state(dataset)`` as :func:`dataset_state`."""
    from ..protocols import PROTOCOLS

    if row.unavailable:
        return Cell(unavailable=row.unavailable, documented=True)
    full = row.protocol or col.protocol
    name = (row.quick if row.protocol else col.quick) if quick else full
    if name is None:
        why = row.why_not_quick if row.protocol else col.why_not_quick
        return Cell(unavailable="not run with --quick" + (f": {why}" if why else ""), documented=bool(why))
    if name not in PROTOCOLS:
        similar = sorted(p for p in PROTOCOLS if p.split("-")[:2] == name.split("-")[:2])
        hint = f" (registered: {', '.join(similar)})" if similar else ""
        return Cell(protocol=name, unavailable=f"protocol `{name}` not available in this build{hint}")
    note = ""
    dataset = PROTOCOLS[name].config.get("dataset")
    fallback = col.fallback_quick if quick else col.fallback
    if fallback and state(dataset) != "staged":
        note = f"{dataset} not found under the data root: ran `{fallback}` instead"
        name = fallback
        dataset = PROTOCOLS[name].config.get("dataset")
    why = method_unavailable(row.method, row.kwargs)
    if why:
        return Cell(protocol=name, unavailable=why[0], documented=why[1], note=note)
    why = model_unavailable(PROTOCOLS[name].config.get("model", "cnn11"))
    if why:
        return Cell(protocol=name, unavailable=why, documented=True, note=note)
    staged = state(dataset)
    if staged == "missing":
        return Cell(protocol=name, documented=True, note=note,
                    unavailable=f"dataset not staged: `{dataset}` is not under the data root and mixlab cannot "
                                f"download it (put it in DATA/{dataset}/; `mixlab data verify` checks it)")
    if staged == "download":
        note = note or f"{dataset} is not under the data root: downloaded from its official source on first use"
    n = PROTOCOLS[name].trials if trials is None else trials
    return Cell(protocol=name, note=note, seeds=list(range(n)))


@dataclass(frozen=True)
class Selection:
    """A part of a reproduction: only the columns labelled ``columns`` and the rows of ``methods`` (empty: all),
    and every protocol shortened to ``epochs`` (None: the protocols' own). Cells left out say so in the report."""

    columns: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    epochs: int | None = None

    def check(self, rep: Reproduction) -> None:
        """Refuse names the reproduction does not have, listing those it has."""
        positive_int("epochs", self.epochs, none="the protocols' own")
        for given, known, flag in ((self.columns, [c.label for t in rep.tables for c in t.columns], "--columns"),
                                   (self.methods, [r.method for t in rep.tables for r in t.rows], "--methods")):
            unknown = [name for name in given if name not in known]
            if unknown:
                raise ValueError(f"{flag}: {rep.name} has no {', '.join(map(repr, unknown))}; it has "
                                 f"{', '.join(dict.fromkeys(known))}")

    def left_out(self, row: Row, col: Column) -> str | None:
        """Why a cell is not run in this part, or None."""
        if self.columns and col.label not in self.columns:
            return f"column not run (--columns {','.join(self.columns)})"
        if self.methods and row.method not in self.methods:
            return f"row not run (--methods {','.join(self.methods)})"
        return None

    def describe(self) -> str:
        """One line for the report ("" for the whole reproduction)."""
        parts = ([f"columns {', '.join(self.columns)}"] if self.columns else []) + (
            [f"methods {', '.join(self.methods)}"] if self.methods else []) + (
            [f"**every protocol shortened to {self.epochs} epoch(s)**, not the papers' schedule"]
            if self.epochs else [])
        return "; ".join(parts)


def resolve_all(rep: Reproduction, quick: bool, data_dir: str | None, trials: int | None, device: str = "cpu",
                threads: int | None = None, jobs: int = 1, selection: Selection | None = None):
    """Every cell of every table (``grid[table][row][column]``, run ids filled in) and the runs they need
    (``{run_id: TrainConfig}`` in table order, deduplicated), for ``jobs`` runs at once (their threads fitted:
    :func:`mixlab.config.fit_to_jobs`), of the ``selection`` (default: all). Nothing is trained or written."""
    selection = selection or Selection()
    selection.check(rep)
    states: dict[str, str] = {}

    def state(ds):
        if ds not in states:
            states[ds] = dataset_state(ds, data_dir)
        return states[ds]

    grid = [[[Cell(unavailable=selection.left_out(r, c), documented=True) if selection.left_out(r, c) else
              resolve(r, c, quick, data_dir, trials, state) for c in t.columns] for r in t.rows] for t in rep.tables]
    runs = {}
    for t, rows in zip(rep.tables, grid):
        for r, cells in zip(t.rows, rows):
            for c, cell in zip(t.columns, cells):
                if cell.unavailable:
                    continue
                for seed in cell.seeds:
                    configs = train_configs(cell, r, seed, device, threads, jobs, selection.epochs)
                    cell.options = dict(configs[0].method_kwargs)
                    cell.trials.append([config.run_id() for config in configs])
                    for config in configs:
                        cell.run_ids.append(config.run_id())
                        runs.setdefault(config.run_id(), config)
    return grid, runs


def dry_run(name: str, out: str | Path = "mixlab-out", quick: bool = False, trials: int | None = None,
            data_dir: str | None = None, device: str = "cpu", log=print, threads: int | None = None,
            jobs: int = 1, selection: Selection | None = None) -> dict:
    """Print every cell's resolution (protocol, method, options, run ids and how many are in ``out``'s store, or
    why the cell cannot run) without training or writing anything; return the counts."""
    positive_int("trials", trials, none="each protocol's")
    rep = get_reproduction(name)
    grid, runs = resolve_all(rep, quick, data_dir, trials, device, threads, jobs, selection)
    db = Path(out) / "results.db"
    store = ResultsStore(out) if db.exists() else None
    counts = {"cells": 0, "available": 0, "documented": 0, "unexplained": 0, "runs": len(runs),
              "runs_done": sum(store.has_run(rid) for rid in runs) if store else 0}
    log(f"reproduce {name}{' --quick' if quick else ''} --dry-run: {rep.title} (nothing is trained)")
    for t, rows in zip(rep.tables, grid):
        log(f"\n## {t.title}")
        for r, cells in zip(t.rows, rows):
            for c, cell in zip(t.columns, cells):
                counts["cells"] += 1
                head = f"- {r.label} | {c.label}: `{r.method}`"
                if cell.unavailable:
                    kind = "documented" if cell.documented else "unexplained"
                    counts[kind] += 1
                    where = f" on `{cell.protocol}`" if cell.protocol else ""
                    log(f"{head}{where}" + (f" {r.kwargs}" if r.kwargs else "") + ": UNAVAILABLE ("
                        + ("" if cell.documented else "NOT DOCUMENTED: ") + f"{cell.unavailable})")
                    continue
                counts["available"] += 1
                done = sum(store.has_run(rid) for rid in cell.run_ids) if store else 0
                log(f"{head} on `{cell.protocol}`, options {cell.options or 'none (defaults)'}, seeds "
                    f"{cell.seeds[0]}-{cell.seeds[-1]}: available, {done} of {len(cell.run_ids)} runs done"
                    + (f" ({cell.note})" if cell.note else "") + f"; runs {', '.join(cell.run_ids)}")
    log(f"\n{counts['cells']} cells: {counts['available']} available, {counts['documented']} unavailable for a "
        f"documented reason, {counts['unexplained']} unavailable without one; {counts['runs']} distinct runs, "
        f"{counts['runs_done']} done (in the results store of --out)")
    return counts


def train_configs(cell: Cell, row: Row, seed: int, device: str, threads: int | None = None, jobs: int = 1,
                  epochs: int | None = None) -> list:
    """The runs of one trial (one per fold on a cross-validated protocol), to train ``jobs`` at once (``epochs``:
    instead of the protocol's)."""
    from ..config import fit_to_jobs
    from ..protocols import get_protocol

    overrides = {"device": device}
    if threads:
        overrides["threads"] = threads
    if epochs:
        overrides["epochs"] = epochs
    if row.kwargs:
        overrides["method_kwargs"] = dict(row.kwargs)
    return [fit_to_jobs(c, jobs) for c in get_protocol(cell.protocol).train_configs(row.method, seed, **overrides)]


def read_value(spec: str, run: dict, evals: dict[str, dict]) -> float | None:
    if spec == "test_error":
        return run.get("test_error")
    if spec == "accuracy":
        return None if run.get("test_error") is None else 100.0 - run["test_error"]
    if spec == "map":
        return run["metrics"].get("test_map")
    if spec.startswith("eval:"):
        _, kind, path = spec.split(":", 2)
        obj = evals.get(kind)
        for part in path.split("."):
            if obj is None:
                return None
            obj = obj[int(part)] if isinstance(obj, list) else obj.get(part)
        return obj
    raise ValueError(f"unknown value spec {spec!r}")


# ------------------------------------------------------------------------------------------------ running
def run_reproduction(name: str, out: str | Path = "mixlab-out", quick: bool = False, trials: int | None = None,
                     data_dir: str | None = None, device: str = "cpu", report_dir: str | Path | None = None,
                     progress: bool | None = None, command: str | None = None, log=print,
                     threads: int | None = None, train: bool = True, jobs: int = 1,
                     selection: Selection | None = None, executor: str = "local", address: str | None = None) -> Path:
    """Train what is missing, evaluate, write ``report.md`` (+ ``results.json`` and PNGs) to ``report_dir``.

    Runs that diverge are listed in the report (and in ``results.json`` under ``diverged``), never averaged;
    the other runs go on. ``threads``: CPU threads per run (default: the engine's rule). ``train=False``
    (``--report-only``): train nothing; the report shows the trials whose runs are all in the store and says
    how many runs are missing. ``jobs``: runs trained at once, ``executor`` / ``address``: where
    (:func:`mixlab.train.train_missing`); ``selection``: only a part of the reproduction (:class:`Selection`, said
    in the report)."""
    from ..eval import run_eval
    from ..eval.common import stored_eval
    from ..results import diverged_runs
    from ..train import train_missing

    positive_int("trials", trials, none="each protocol's")
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rep = get_reproduction(name)
    store = ResultsStore(out)
    report_dir = Path(report_dir or Path(out) / "reports" / (name + ("-quick" if quick else "")))
    report_dir.mkdir(parents=True, exist_ok=True)
    grid, runs = resolve_all(rep, quick, data_dir, trials, device, threads, jobs, selection)
    todo = [rid for rid in runs if not store.has_run(rid)]
    log(f"reproduce {name}{' --quick' if quick else ''}: {len(runs)} runs, {len(runs) - len(todo)} found in "
        f"{Path(out) / 'results.db'}, {len(todo)} to train")
    missing = set() if train else set(todo)  # --report-only: not trained, their trials left out
    todo = todo if train else []
    # runs another process (sharing this --out) is training right now are left out
    _, locked = train_missing([runs[rid] for rid in todo], out, data_dir, progress, log, jobs=jobs, executor=executor,
                              address=address)
    diverged = {d["run_id"]: d for d in diverged_runs([store.get_run(rid) for rid in runs
                                                       if rid not in locked | missing and store.has_run(rid)])}
    for d in diverged.values():
        log(f"  {describe_diverged(d)}: no value in the report")
    # evaluations the columns read, on every run of the column (skipped when stored)
    todo_evals = [(rid, c.value.split(":")[1]) for t, rows in zip(rep.tables, grid) for r, cells in zip(t.rows, rows)
                  for c, cell in zip(t.columns, cells) if c.value.startswith("eval:") for rid in cell.run_ids
                  if rid not in locked | missing and rid not in diverged and stored_eval(out, rid, c.value.split(":")[1]) is None]
    todo_evals = list(dict.fromkeys(todo_evals))
    if todo_evals:
        log(f"reproduce {name}: {len(todo_evals)} evaluations to run")
    for t, rows in zip(rep.tables, grid):
        for r, cells in zip(t.rows, rows):
            for c, cell in zip(t.columns, cells):
                cell.trials = [ids for ids in cell.trials if not set(ids) & (locked | missing)]  # whole trials only
                cell.run_ids = [rid for ids in cell.trials for rid in ids]
                cell.diverged = [diverged[rid] for rid in cell.run_ids if rid in diverged]
                kinds = [c.value.split(":")[1]] if c.value.startswith("eval:") else []
                for ids in cell.trials:
                    if set(ids) & set(diverged):  # a trial with a diverged run has no number
                        continue
                    values = []
                    for rid in ids:
                        evals = {}
                        for kind in kinds:
                            pending = (rid, kind) in todo_evals
                            t_eval = time.perf_counter()
                            evals[kind] = run_eval(out, rid, kind, data_dir=data_dir, device=device, **c.eval_options)
                            if pending:  # one line per evaluation actually run (they can take minutes)
                                log(f"  [eval {todo_evals.index((rid, kind)) + 1}/{len(todo_evals)}] {kind} on {rid} "
                                    f"({time.perf_counter() - t_eval:.1f} s)")
                        run = store.get_run(rid)
                        values.append(read_value(c.value, run, evals))
                        cell.run_seconds[rid] = run.get("train_seconds") or 0.0
                    if values and None not in values:  # a trial's number: the mean over its folds
                        cell.values.append(sum(float(v) for v in values) / len(values))
    wall = time.perf_counter() - t0
    trained = len(todo) - len(locked)
    log_invocation(out, {"name": name, "quick": quick, "trials": trials, "command": command, "started": started,
                         "wall_seconds": wall, "trained": trained, "runs": len(runs), "jobs": jobs,
                         "machine": machine(), "skipped_locked": len(locked), "missing": len(missing)})
    return write_report(rep, grid, quick, report_dir, out, wall, trained, len(runs), data_dir, command,
                        skipped=len(locked), diverged=list(diverged.values()), missing=len(missing),
                        part=selection.describe() if selection else "")


