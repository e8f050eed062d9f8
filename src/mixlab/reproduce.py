"""One-command paper reproduction: ``mixlab reproduce NAME [--quick] [--trials T]``.

A :class:`Reproduction` is a list of :class:`Table` s. A table names its rows by method registry name (with
options) and its columns by protocol name (a full protocol, and a ``--quick`` one or a reason why none), plus how
to read our number from a run (its test error, accuracy, mAP, or a stored evaluation). Running it trains every
(row, column, seed) not yet in the results store (so a killed sweep resumes where it stopped), runs the needed
evaluations (also skipped when stored), and writes a Markdown report with the paper's numbers (from
``mixlab/data/paper_numbers.json``) beside ours, the protocols, what was scaled and why, and the plots.

A cell that cannot run says why, in the table (never a number): a documented reason (a row or a ``--quick``
column that states why it is not run, a method listed in :data:`NOT_IMPLEMENTED`, a dataset not staged under the
data root, a model whose optional weights are not installed), or "not available in this build" for a protocol or
method this build does not register (a test fails on those: every target must resolve). ``mixlab reproduce NAME
--dry-run`` prints every cell's resolution without training (:func:`dry_run`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from .checks import positive_int
from .machine import machine
from .registry import Registry
from .results import ResultsStore, describe_diverged
from .protocols import lowres_protocol
from .results.store import format_options, mean_std


# ------------------------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class Row:
    """A table row: ``method`` (registry name) with ``kwargs``; ``paper`` is the paper's row label."""

    label: str
    method: str
    kwargs: dict = field(default_factory=dict)
    paper: str | None = None
    #: per-row protocols (tables whose rows differ by model, e.g. AMP Table 2); override the column's
    protocol: str | None = None
    quick: str | None = None
    why_not_quick: str = ""  # with a per-row protocol and no quick one: why
    #: a documented reason why this row cannot run in mixlab at all (e.g. it needs data mixlab does not have)
    unavailable: str = ""


@dataclass(frozen=True)
class Column:
    """A table column: the protocol (full and ``--quick``) its runs follow and which number it shows.

    ``value``: ``test_error`` | ``accuracy`` (100 - error) | ``map`` (multi-label mAP) | ``eval:KIND:PATH``
    (a stored evaluation's metric, ``PATH`` dotted, e.g. ``eval:ood:sets.kmnist.auroc``).
    ``fallback`` / ``fallback_quick``: protocols to use when the protocol's dataset is not under the data root.
    """

    label: str
    protocol: str | None
    quick: str | None = None
    why_not_quick: str = ""
    value: str = "test_error"
    paper: str | None = None
    fallback: str | None = None
    fallback_quick: str | None = None
    eval_options: dict = field(default_factory=dict)
    lower_is_better: bool | None = None  # None: the table's


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]
    columns: tuple[Column, ...]
    paper_key: str | None = None  # key in paper_numbers.json "tables"
    transpose_paper: bool = False  # the paper's table has our columns as rows
    figure: str | None = "bars"  # bars | openset | noise | None
    lower_is_better: bool = True
    note: str = ""


@dataclass(frozen=True)
class Reproduction:
    name: str
    title: str
    tables: tuple[Table, ...]
    notes: str = ""
    paper_only: tuple[str, ...] = ()  # paper tables shown verbatim for context (not comparable cell by cell)


REPRODUCTIONS = Registry("reproduction")


def register(r: Reproduction) -> Reproduction:
    REPRODUCTIONS.register(r.name, r, r.title)
    return r


def get_reproduction(name: str) -> Reproduction:
    return REPRODUCTIONS.get(name)


def paper_numbers() -> dict:
    """The papers' printed numbers (``mixlab/data/paper_numbers.json``)."""
    return json.loads(resources.files("mixlab").joinpath("data/paper_numbers.json").read_text())


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
    from .registry import METHODS

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

    from .registry import MODELS

    reason = getattr(sys.modules[MODELS.get(name).__module__], "unavailable_reason", None)
    return reason() if reason is not None else None


def dataset_state(name: str, data_dir: str | None) -> str:
    """``staged`` (loads from the data root), ``download`` (missing, fetched from its official source on first
    use) or ``missing`` (not staged, and mixlab cannot download it)."""
    from .data import load_dataset
    from .data.files import DatasetMissingError

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
    from .protocols import PROTOCOLS

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


def resolve_all(rep: Reproduction, quick: bool, data_dir: str | None, trials: int | None, device: str = "cpu",
                threads: int | None = None):
    """Every cell of every table (``grid[table][row][column]``, run ids filled in) and the runs they need
    (``{run_id: TrainConfig}`` in table order, deduplicated). Nothing is trained or written."""
    states: dict[str, str] = {}

    def state(ds):
        if ds not in states:
            states[ds] = dataset_state(ds, data_dir)
        return states[ds]

    grid = [[[resolve(r, c, quick, data_dir, trials, state) for c in t.columns] for r in t.rows] for t in rep.tables]
    jobs = {}
    for t, rows in zip(rep.tables, grid):
        for r, cells in zip(t.rows, rows):
            for c, cell in zip(t.columns, cells):
                if cell.unavailable:
                    continue
                for seed in cell.seeds:
                    configs = train_configs(cell, r, seed, device, threads)
                    cell.options = dict(configs[0].method_kwargs)
                    cell.trials.append([config.run_id() for config in configs])
                    for config in configs:
                        cell.run_ids.append(config.run_id())
                        jobs.setdefault(config.run_id(), config)
    return grid, jobs


def dry_run(name: str, out: str | Path = "mixlab-out", quick: bool = False, trials: int | None = None,
            data_dir: str | None = None, device: str = "cpu", log=print) -> dict:
    """Print every cell's resolution (protocol, method, options, run ids and how many are in ``out``'s store, or
    why the cell cannot run) without training or writing anything; return the counts."""
    positive_int("trials", trials, none="each protocol's")
    rep = get_reproduction(name)
    grid, jobs = resolve_all(rep, quick, data_dir, trials, device)
    db = Path(out) / "results.db"
    store = ResultsStore(out) if db.exists() else None
    counts = {"cells": 0, "available": 0, "documented": 0, "unexplained": 0, "runs": len(jobs),
              "runs_done": sum(store.has_run(rid) for rid in jobs) if store else 0}
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


def train_configs(cell: Cell, row: Row, seed: int, device: str, threads: int | None = None) -> list:
    """The runs of one trial (one per fold on a cross-validated protocol)."""
    from .protocols import get_protocol

    overrides = {"device": device}
    if threads:
        overrides["threads"] = threads
    if row.kwargs:
        overrides["method_kwargs"] = dict(row.kwargs)
    return get_protocol(cell.protocol).train_configs(row.method, seed, **overrides)


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
                     threads: int | None = None) -> Path:
    """Train what is missing, evaluate, write ``report.md`` (+ ``results.json`` and PNGs) to ``report_dir``.

    Runs that diverge are listed in the report (and in ``results.json`` under ``diverged``), never averaged;
    the other runs go on. ``threads``: CPU threads per run (default: the engine's rule)."""
    from .eval import run_eval
    from .eval.common import stored_eval
    from .results import diverged_runs
    from .train import train_missing

    positive_int("trials", trials, none="each protocol's")
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rep = get_reproduction(name)
    store = ResultsStore(out)
    report_dir = Path(report_dir or Path(out) / "reports" / (name + ("-quick" if quick else "")))
    report_dir.mkdir(parents=True, exist_ok=True)
    grid, jobs = resolve_all(rep, quick, data_dir, trials, device, threads)
    todo = [rid for rid in jobs if not store.has_run(rid)]
    log(f"reproduce {name}{' --quick' if quick else ''}: {len(jobs)} runs, {len(jobs) - len(todo)} found in "
        f"{Path(out) / 'results.db'}, {len(todo)} to train")
    # runs another process (sharing this --out) is training right now are left out
    _, locked = train_missing([jobs[rid] for rid in todo], out, data_dir, progress, log)
    diverged = {d["run_id"]: d for d in diverged_runs([store.get_run(rid) for rid in jobs
                                                       if rid not in locked and store.has_run(rid)])}
    for d in diverged.values():
        log(f"  {describe_diverged(d)}: no value in the report")
    # evaluations the columns read, on every run of the column (skipped when stored)
    todo_evals = [(rid, c.value.split(":")[1]) for t, rows in zip(rep.tables, grid) for r, cells in zip(t.rows, rows)
                  for c, cell in zip(t.columns, cells) if c.value.startswith("eval:") for rid in cell.run_ids
                  if rid not in locked and rid not in diverged and stored_eval(out, rid, c.value.split(":")[1]) is None]
    todo_evals = list(dict.fromkeys(todo_evals))
    if todo_evals:
        log(f"reproduce {name}: {len(todo_evals)} evaluations to run")
    for t, rows in zip(rep.tables, grid):
        for r, cells in zip(t.rows, rows):
            for c, cell in zip(t.columns, cells):
                cell.trials = [ids for ids in cell.trials if not set(ids) & locked]  # only whole trials count
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
                         "wall_seconds": wall, "trained": trained, "runs": len(jobs), "machine": machine(),
                         "skipped_locked": len(locked)})
    return write_report(rep, grid, quick, report_dir, out, wall, trained, len(jobs), data_dir, command,
                        skipped=len(locked), diverged=list(diverged.values()))


def log_invocation(out, record: dict) -> None:
    """Append one line per finished invocation to ``<out>/reproduce-log.jsonl`` (the report lists them, so the
    wall time of a sweep that was resumed, or of the run that trained everything, stays on record)."""
    with open(Path(out) / "reproduce-log.jsonl", "a") as f:
        f.write(json.dumps(record, default=str) + "\n")


def invocations(out, name: str, quick: bool) -> list[dict]:
    path = Path(out) / "reproduce-log.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["name"] == name and r["quick"] == quick]


# ------------------------------------------------------------------------------------------------ report
def fmt(mean: float, std: float | None, digits: int | None = None) -> str:
    """``mean ± std``; 3 decimals below 1 (e.g. MNIST full errors), else 2. Paper numbers: as printed."""
    if digits is None:
        digits = 3 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def fmt_paper(v: tuple[float, float | None]) -> str:
    return f"{v[0]:g}" + (f" ± {v[1]:g}" if v[1] is not None else "")


def paper_cell(numbers: dict, t: Table, r: Row, c: Column) -> tuple[float, float | None] | None:
    if not t.paper_key:
        return None
    rows = numbers["tables"][t.paper_key]["rows"]
    a, b = (c.paper or c.label), (r.paper or r.label)
    if not t.transpose_paper:
        a, b = b, a
    v = rows.get(a, {}).get(b)
    return None if v is None else (v[0], v[1])


def write_report(rep: Reproduction, grid, quick: bool, report_dir: Path, out, wall: float, trained: int,
                 total: int, data_dir, command: str | None, skipped: int = 0, diverged: list | None = None) -> Path:
    from .protocols import PROTOCOLS

    numbers = paper_numbers()
    m = machine()
    lines = [f"# {rep.title}{' (--quick)' if quick else ''}", ""]
    lines += ["Written by `mixlab reproduce`; every number and figure below comes from the command's runs or from "
              "`mixlab/data/paper_numbers.json` (the papers' printed numbers, with their source).", ""]
    lines += [f"- command: `{command or 'mixlab reproduce ' + rep.name + (' --quick' if quick else '')}`",
              f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
              f"python {m['python']}, {m['platform']}" + (f", GPU {m['gpu']}" if m['gpu'] else ""),
              f"- wall time of this invocation: {wall:.0f} s; runs: {total} in all, {trained} trained now, "
              f"{total - trained - skipped} found in `OUT/results.db` (OUT: the --out folder)"
              + (f", **{skipped} skipped** (another process was training them in this output folder: run the "
                 f"command again when it has finished to include them)" if skipped else "")]
    earlier = invocations(out, rep.name, quick)
    if earlier:
        lines += ["", "Finished invocations of this reproduction in this output folder (a killed one is not listed; "
                      "its finished runs are counted by the next):", "",
                  "| started | wall time | runs trained | runs in all | command |", "|---|---|---|---|---|"]
        lines += [f"| {e['started']} | {e['wall_seconds']:.0f} s | {e['trained']} | {e['runs']} | `{e['command']}` |"
                  for e in earlier]
    if rep.notes:
        lines += ["", rep.notes]
    results = {"name": rep.name, "quick": quick, "wall_seconds": wall, "machine": m, "tables": [],
               "diverged": diverged or []}
    if diverged:
        lines += ["", f"**{len(diverged)} run(s) diverged** (non-finite training loss; stored with status "
                      f"`diverged`, no value, never averaged):", ""]
        lines += [f"- {describe_diverged(d)}" for d in diverged]
    used_protocols: dict[str, set] = {}
    figures = []
    for ti, (t, rows) in enumerate(zip(rep.tables, grid)):
        meta = numbers["tables"].get(t.paper_key, {}) if t.paper_key else {}
        src = f" — paper: {numbers['papers'][meta['paper']]}, {meta['table']}" if meta else ""
        lines += ["", f"## {t.title}", "", f"Numbers: mean ± std over trials (n = trials); bold: our best "
                                            f"per column (lowest error / drop, highest accuracy / AUC / mAP){src}."]
        if meta:
            lines += [f"Paper's caption: {meta['caption']}. Paper's metric: {meta['metric']}."]
        if t.note:
            lines += ["", t.note]
        has_paper = bool(t.paper_key)
        head = ["method"]
        for c in t.columns:
            head += ([f"{c.label} paper"] if has_paper else []) + [f"{c.label} ours"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        footnotes: list[str] = []
        tjson = {"title": t.title, "paper_key": t.paper_key, "rows": []}
        run_seconds: dict[str, float] = {}
        lower = [t.lower_is_better if c.lower_is_better is None else c.lower_is_better for c in t.columns]
        best = [(min if lower[j] else max)((sum(rows[i][j].values) / len(rows[i][j].values) for i in range(len(t.rows))
                                            if rows[i][j].values), default=None) for j in range(len(t.columns))]
        for r, cells in zip(t.rows, rows):
            # the options the runs were trained with (the row's and the protocol's): in the row when the same in
            # every column, else as a footnote per cell
            ran = [cell for cell in cells if not cell.unavailable]
            common = {format_options(cell.options) for cell in ran}
            shared = None if len(common) > 1 else (common.pop() if common else format_options(r.kwargs))
            shown = format_options(r.kwargs) if shared is None else shared
            out_cells = [f"{r.label} (`{r.method}`" + (f" {shown}" if shown else "") + ")"]
            rjson = {"label": r.label, "method": r.method, "kwargs": r.kwargs, "cells": []}
            for j, (c, cell) in enumerate(zip(t.columns, cells)):
                if has_paper:
                    p = paper_cell(numbers, t, r, c)
                    out_cells.append(fmt_paper(p) if p else "–")
                if cell.protocol and not cell.unavailable:
                    used_protocols.setdefault(cell.protocol, set()).add(c.label)
                if cell.unavailable:
                    if cell.unavailable not in footnotes:
                        footnotes.append(cell.unavailable)
                    out_cells.append(f"n/a [{footnotes.index(cell.unavailable) + 1}]")
                elif cell.values:
                    mean, std = mean_std(cell.values)
                    text = f"{fmt(mean, std if len(cell.values) > 1 else None)} (n={len(cell.values)})"
                    out_cells.append(f"**{text}**" if mean == best[j] and len(t.rows) > 1 else text)
                else:
                    out_cells.append("no result")
                if cell.diverged:
                    why = (f"{len(cell.diverged)} of {len(cell.run_ids)} runs diverged and are left out: "
                           + "; ".join(describe_diverged(d) for d in cell.diverged))
                    footnotes.append(why)
                    out_cells[-1] += f" [{len(footnotes)}]"
                notes = [cell.note] if cell.note else []
                if shared is None and not cell.unavailable:
                    notes.append(f"method options: {format_options(cell.options) or 'none'}")
                for note in notes:
                    if note not in footnotes:
                        footnotes.append(note)
                    out_cells[-1] += f" [{footnotes.index(note) + 1}]"
                run_seconds.update(cell.run_seconds)
                rjson["cells"].append({"column": c.label, "protocol": cell.protocol, "unavailable": cell.unavailable,
                                       "note": cell.note, "method_options": cell.options, "values": cell.values,
                                       "run_ids": cell.run_ids,
                                       "paper": paper_cell(numbers, t, r, c) if has_paper else None})
            lines.append("| " + " | ".join(out_cells) + " |")
            tjson["rows"].append(rjson)
        if footnotes:
            lines += [""] + [f"[{i}] {f}" for i, f in enumerate(footnotes, 1)]
        lines += ["", f"Training time of the runs in this table (sum over runs, as measured when each was trained): "
                      f"{sum(run_seconds.values()):.0f} s over {len(run_seconds)} runs."]
        fig = make_figure(t, rows, numbers, report_dir / f"table{ti + 1}-{t.figure}.png", out) if t.figure else None
        if fig:
            figures.append(fig)
            lines += ["", f"![{t.title}]({fig.name})"]
        results["tables"].append(tjson)
    for key in rep.paper_only:
        meta = numbers["tables"][key]
        cols = list(dict.fromkeys(c for row in meta["rows"].values() for c in row))
        lines += ["", f"## The paper's {meta['table']} (for context; not comparable cell by cell)", "",
                  f"{numbers['papers'][meta['paper']]}. {meta['caption']}.", "",
                  "| row | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
        for label, row in meta["rows"].items():
            lines.append(f"| {label} | " + " | ".join(fmt_paper(row[c]) if c in row else "–" for c in cols) + " |")
    lines += ["", "## Protocols", ""]
    for name, labels in used_protocols.items():
        p = PROTOCOLS[name]
        lines.append(f"- `{name}` ({', '.join(sorted(labels))}): {p.description}; trials as run above; "
                     f"source: {p.source or '–'}." + (f" Scaled: {p.scaling}." if p.scaling else ""))
        cfg = {k: v for k, v in p.config.items()}
        lines.append(f"  settings: `{json.dumps(cfg, default=str)}`")
        if p.cv_folds:
            k = p.folds_per_trial or p.cv_folds
            lines.append(f"  {p.cv_folds}-fold cross-validation: a trial's number is the mean over its {k} fold "
                         f"run{'s' if k > 1 else ''} (trial s: folds s*{k} .. s*{k}+{k - 1} mod {p.cv_folds})")
        if p.method_kwargs:
            lines.append("  method options of this protocol: " + "; ".join(
                f"`{m}`: {format_options(o)}" for m, o in p.method_kwargs.items()))
    path = report_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (report_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return path


# ------------------------------------------------------------------------------------------------ figures
def make_figure(t: Table, rows, numbers: dict, path: Path, out) -> Path | None:
    if t.figure == "bars":
        return bars_figure(t, rows, numbers, path)
    if t.figure in ("openset", "noise"):
        return curves_figure(t, rows, path, out)
    raise ValueError(f"unknown figure kind {t.figure!r}")


def bars_figure(t: Table, rows, numbers: dict, path: Path) -> Path | None:
    """One panel per column: ours (mean ± std) beside the paper's number for each row that has ours."""
    from .viz import _plt, save_figure

    cols = [(j, c) for j, c in enumerate(t.columns) if any(rows[i][j].values for i in range(len(t.rows)))]
    if not cols:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols) + 1, 3.4), squeeze=False)
    for ax, (j, c) in zip(axes[0], cols):
        labels, ours, errs, paper = [], [], [], []
        for i, r in enumerate(t.rows):
            cell = rows[i][j]
            if not cell.values:
                continue
            mean, std = mean_std(cell.values)
            p = paper_cell(numbers, t, r, c)
            labels.append(r.label)
            ours.append(mean), errs.append(std), paper.append(p[0] if p else math.nan)
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], ours, 0.4, yerr=errs, capsize=3, label="ours")
        if t.paper_key:
            ax.bar([x + 0.2 for x in xs], paper, 0.4, label="paper", color="tab:gray")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(c.label, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(t.title, fontsize=9)
    return save_figure(fig, path)


def curves_figure(t: Table, rows, path: Path, out) -> Path | None:
    """Mean curves over seeds per row, one figure per distinct protocol of the table (stacked vertically)."""
    from .eval.common import stored_eval
    from .eval.noise import plot_noise
    from .eval.openset import plot_openset

    kind = t.figure
    by_protocol: dict[str, dict] = {}
    for i, r in enumerate(t.rows):
        for j, c in enumerate(t.columns):
            cell = rows[i][j]
            if cell.unavailable or not cell.run_ids or r.label in by_protocol.get(cell.protocol, {}):
                continue
            evs = [stored_eval(out, rid, kind) for rid in cell.run_ids]
            evs = [e for e in evs if e]
            if not evs:
                continue
            keys = ("acc_a", "acc_b") if kind == "openset" else ("accuracy", "relative_drop")
            mean = {k: [sum(v) / len(v) for v in zip(*(e[k] for e in evs))] for k in keys}
            x = "thresholds" if kind == "openset" else "levels"
            curve = {x: evs[0][x], **mean}
            if kind == "openset":
                curve["auc_a"] = sum(e["auc_a"] for e in evs) / len(evs)
                curve["auc_b"] = sum(e["auc_b"] for e in evs) / len(evs)
            by_protocol.setdefault(cell.protocol, {})[f"{r.label} (n={len(evs)})"] = curve
    if not by_protocol:
        return None
    parts = []
    for k, (protocol, curves) in enumerate(by_protocol.items()):
        p = path.with_name(f"{path.stem}-{protocol}.png")
        plot = plot_openset if kind == "openset" else plot_noise
        parts.append(plot(curves, p, f"{t.title}: {protocol} (mean over seeds)"))
    return parts[0] if len(parts) == 1 else _stack(parts, path)


def _stack(paths: list[Path], path: Path) -> Path:
    from .viz import _plt, save_figure

    plt = _plt()
    imgs = [plt.imread(p) for p in paths]
    fig, axes = plt.subplots(len(imgs), 1, figsize=(9, 3.6 * len(imgs)))
    for ax, img in zip(axes, imgs):
        ax.imshow(img), ax.axis("off")
    save_figure(fig, path)
    for p in paths:
        p.unlink()
    return path


# ----------------------------------------------------------------------------------------- the reproductions
def _rows(pairs, **kw) -> tuple[Row, ...]:
    return tuple(Row(label, method, **kw) for label, method in pairs)


_T4_ROWS = _rows([("Baseline", "erm"), ("BC", "bc"), ("Mixup", "mixup"), ("Manifold Mixup", "manifold"),
                  ("OptTransMix", "opttransmix"), ("OptTransMix + Mixup", "opttransmix+mixup"),
                  ("OptTransMix + BC", "opttransmix+bc"), ("AutoMix", "automix-zhu")])
_FULL_WHY = ("the full 60,000-image set for 100 epochs is about 120x the training of a sub run per epoch; "
             "too long for a CPU quick run (run without --quick on a GPU)")
register(Reproduction(
    "automix-table4", "AutoMix paper, Table 4: MNIST and Fashion-MNIST (sub and full)",
    (Table("Table 4: top-1 error %", _T4_ROWS, (
        Column("MNIST(full)", "automix-mnist-full", None, _FULL_WHY),
        Column("MNIST(sub)", "automix-mnist-sub", "automix-mnist-sub-quick"),
        Column("F-MNIST(full)", "automix-fmnist-full", None, _FULL_WHY),
        Column("F-MNIST(sub)", "automix-fmnist-sub", "automix-fmnist-sub-quick")), "automix-table4"),),
    notes="With --quick the sub columns use the CPU-sized protocols (see Protocols: a x0.25-width network "
          "without dropout), so our errors are not expected to reach the paper's; the ranking of "
          "methods is what the quick run can show."))

_CIFAR_WHY = "ResNet-18 on CIFAR-10 for 200 epochs is GPU work (days on 2 CPU cores)"
register(Reproduction(
    "automix-table5", "AutoMix paper, Table 5: CIFAR-10 and MIML (multi-label mAP)",
    (Table("Table 5: CIFAR-10 top-1 error %", _rows([("baseline", "erm"), ("BC", "bc"), ("Mixup", "mixup"),
                                                     ("M-Mixup", "manifold"), ("AutoMix", "automix-zhu")]),
           (Column("CIFAR10 (full)", "automix-cifar10-full", None, _CIFAR_WHY),
            Column("CIFAR10 (sub)", "automix-cifar10-sub", None, _CIFAR_WHY)), "automix-table5"),
     Table("Table 5: MIML mAP % (higher is better)", _rows([("baseline", "erm"), ("BC", "bc"), ("Mixup", "mixup"),
                                                            ("M-Mixup", "manifold"), ("AutoMix", "automix-zhu")]),
           (Column("MIML (full)", "automix-miml", "automix-miml-quick", value="map"),), "automix-table5",
           lower_is_better=False,
           note="MIML: the 2,000 bags of 9 x 15 features (the images are not available), a bag as a 1 x 9 x 15 "
                "input to the `bagnet` model, sigmoid head, BCE on mixed multi-hot targets, 1:1 split.")),
))

_ABL = "automix-zhu"
register(Reproduction(
    "automix-table6", "AutoMix paper, Table 6: ablations of AutoMix (label strategy, pair choice) on CIFAR-10",
    (Table("Table 6: top-1 error %", (
        Row("label (a): first image's label", _ABL, {"label_strategy": "first"}),
        Row("label (b): half-half mix of the two labels", _ABL, {"label_strategy": "half"}),
        Row("label (c): sum of the two labels clipped to [0, 1] (multi-label)", _ABL,
            {"label_strategy": "multilabel"}),
        Row("label (d): random ratio (AutoMix)", _ABL, {"label_strategy": "lambda"}),
        Row("pairs: same class", _ABL, {"pairs": "same"}),
        Row("pairs: different class", _ABL, {"pairs": "different"}),
        Row("pairs: random (AutoMix)", _ABL, {"pairs": "random"})),
        (Column("CIFAR10 (full)", "automix-cifar10-full", None, _CIFAR_WHY),
         Column("CIFAR10 (sub)", "automix-cifar10-sub", None, _CIFAR_WHY)), "automix-table6"),),
    notes="Rows name the options of `automix-zhu` they set (`label_strategy`, `pairs`)."))

_OPEN_ROWS = _rows([("Baseline", "erm"), ("BC", "bc"), ("Mixup", "mixup"), ("Manifold Mixup", "manifold"),
                    ("OptTransMix", "opttransmix"), ("AutoMix", "automix-zhu")])
register(Reproduction(
    "automix-openset", "AutoMix paper, Fig. 5: open set (train on seen classes, test on all)",
    (Table("Open set: area under accuracy-vs-threshold (percent; higher is better)", _OPEN_ROWS, (
        Column("MNIST AUC (a)", "automix-mnist-openset", "automix-mnist-openset-quick", value="eval:openset:auc_a"),
        Column("MNIST AUC (b)", "automix-mnist-openset", "automix-mnist-openset-quick", value="eval:openset:auc_b"),
        Column("F-MNIST AUC (a)", "automix-fmnist-openset", "automix-fmnist-openset-quick", value="eval:openset:auc_a"),
        Column("F-MNIST AUC (b)", "automix-fmnist-openset", "automix-fmnist-openset-quick",
               value="eval:openset:auc_b")), None, figure="openset", lower_is_better=False,
        note="Setting (a): n seen classes + 1 'unknown'; (b): known vs unknown. The paper shows curves only "
             "(no numbers), so there is no paper column."),)))

_NOISE_ROWS = _rows([("Baseline", "erm"), ("BC", "bc"), ("Mixup", "mixup"), ("AutoMix", "automix-zhu")])
register(Reproduction(
    "automix-noise", "AutoMix paper, Fig. 6: robustness to salt-and-pepper noise",
    (Table("Noise: accuracy % at 0 and 30 % noise, relative drop % at 30 %", _NOISE_ROWS, (
        Column("clean accuracy", "automix-cifar10-full", "automix-fmnist-sub-quick", value="eval:noise:accuracy.0"),
        Column("accuracy at 30 %", "automix-cifar10-full", "automix-fmnist-sub-quick", value="eval:noise:accuracy.-1"),
        Column("relative drop at 30 %", "automix-cifar10-full", "automix-fmnist-sub-quick",
               value="eval:noise:relative_drop.-1", lower_is_better=True)), None, figure="noise", lower_is_better=False,
        note="The paper: CIFAR-10, ResNet-18 (curves only, no numbers). With --quick we evaluate the Fashion-MNIST "
             "sub quick runs (the same runs as automix-table4 --quick) instead: ResNet-18 on CIFAR-10 is GPU work."),)))

_OOD_ROWS = _rows([("Baseline", "erm"), ("Input mixup", "mixup"), ("Cutmix", "cutmix"),
                   ("Manifold mixup", "manifold"), ("SaliencyMix", "saliencymix"), ("AlignMixup", "alignmix"),
                   ("MultiMix (ours)", "multimix"), ("Dense MultiMix (ours)", "dense-multimix")])


def _ood_cols(protocol: str, sets: tuple[tuple[str, str], ...]) -> tuple[Column, ...]:
    cols = []
    for ood, label in sets:
        for key, name in (("auroc", "AUROC"), ("aupr_in", "AUPR-In"), ("aupr_out", "AUPR-Out")):
            cols.append(Column(f"{label} {name}", protocol, protocol + "-quick", value=f"eval:ood:sets.{ood}.{key}"))
    return tuple(cols)


register(Reproduction(
    "multimix-ood", "MultiMix paper: OOD detection and embedding alignment / uniformity, on the MNIST family",
    (Table("OOD detection, in-distribution MNIST (percent, higher is better)", _OOD_ROWS,
           _ood_cols("automix-mnist-sub", (("kmnist", "KMNIST"), ("fashion-mnist", "F-MNIST"))), None,
           figure=None, lower_is_better=False),
     Table("OOD detection, in-distribution Fashion-MNIST (percent, higher is better)", _OOD_ROWS,
           _ood_cols("automix-fmnist-sub", (("mnist", "MNIST"), ("kmnist", "KMNIST"))), None,
           figure=None, lower_is_better=False),
     Table("Embedding alignment and uniformity (lower is better), in-distribution MNIST test images", _OOD_ROWS,
           (Column("Alignment", "automix-mnist-sub", "automix-mnist-sub-quick", value="eval:align-uniform:alignment",
                   paper="Alignment"),
            Column("Uniformity", "automix-mnist-sub", "automix-mnist-sub-quick", value="eval:align-uniform:uniformity",
                   paper="Uniformity")), "multimix-align-uniform", figure=None)),
    notes="The paper evaluates PreActResNet-18 on CIFAR-scale data against LSUN / iSUN / Tiny-ImageNet; those sets "
          "are not available, so we use the MNIST family (each member's test set is OOD for the others) and the "
          "11-layer CNN runs of the AutoMix sub protocols. Score: max softmax probability.",
    paper_only=("multimix-ood",)))

_CIFAR_QUICK_NOTE = dict(fallback="automix-fmnist-sub", fallback_quick="automix-fmnist-sub-quick")
register(Reproduction(
    "alignmixup-cifar", "AlignMixup paper: CIFAR-10 classification (PreActResNet-18)",
    (Table("CIFAR-10 top-1 error %", _rows([("Baseline", "erm"), ("Input", "mixup"), ("Manifold", "manifold"),
                                           ("PuzzleMix", "puzzlemix"), ("Co-Mixup", "comixup"),
                                           ("StyleCutMix", "stylecutmix"), ("AlignMixup (ours)", "alignmix"),
                                           ("AlignMixup/AE (ours)", "alignmix-ae")]),
           (Column("CIFAR-10 R-18", "alignmixup-cifar10", "cifar10-quick", **_CIFAR_QUICK_NOTE),),
           "alignmixup-classification"),),
    notes="Without CIFAR-10 under the data root the column runs on Fashion-MNIST (sub) instead and says so."))

register(Reproduction(
    "transformmix-cifar", "TransformMix paper, Table 6: CIFAR-10 top-1 accuracy (ResNet-18)",
    (Table("CIFAR-10 top-1 accuracy % (higher is better)", _rows([("Simple", "erm"), ("Mixup", "mixup"),
                                                                  ("Cutmix", "cutmix"),
                                                                  ("Transform-Mix", "transformmix")]),
           (Column("ResNet-18", "automix-cifar10-full", "cifar10-quick", value="accuracy", **_CIFAR_QUICK_NOTE),),
           "transformmix-table6", lower_is_better=False),),
    notes="The paper's ResNet-18 CIFAR-10 schedule is not given in its appendix; the full run uses the AutoMix "
          "paper's ResNet-18 CIFAR-10 protocol. Without CIFAR-10 under the data root the column runs on "
          "Fashion-MNIST (sub) instead and says so."))

_TM = "transformmix"
_TM_WRN_WHY = "WRN-28-10 on CIFAR-100 for 400 epochs is GPU work (and CIFAR-100 must be under the data root)"
register(Reproduction(
    "transformmix-table4", "TransformMix paper, Table 4: ablations of the mixing module (accuracy %)",
    (Table("Table 4: top-1 accuracy % (higher is better)", (
        Row("Simple", "erm"), Row("Mixup", "mixup"),
        Row("softmax+CAM", _TM, {"ablation": "softmax-cam"}),
        Row("w/ STN only", _TM, {"ablation": "stn-only"}),
        Row("w/ MPN only", _TM, {"ablation": "mpn-only"}),
        Row("TransformMix", _TM)),
        (Column("CIFAR-10", "automix-cifar10-full", "cifar10-quick", value="accuracy", **_CIFAR_QUICK_NOTE),
         Column("CIFAR-100", "transformmix-cifar100-wrn", None, _TM_WRN_WHY, value="accuracy")),
        "transformmix-table4", lower_is_better=False),),
    notes="Rows are `transformmix` with its `ablation` option: `softmax-cam` (masks = softmax over the teacher's "
          "CAMs and log lambda, no learned network), `stn-only` (the spatial transformer with those masks), "
          "`mpn-only` (the mask prediction network, identity transforms). The paper's CIFAR-10 ResNet-18 schedule "
          "is not given; the full CIFAR-10 column uses the AutoMix paper's ResNet-18 protocol. Without CIFAR-10 "
          "under the data root the quick column runs on Fashion-MNIST (sub) instead and says so."))

register(Reproduction(
    "transformmix-table7", "TransformMix paper, Table 7: mixing k = 3 images against k = 2 (accuracy %)",
    (Table("Mixing 2 and 3 images: top-1 accuracy % (higher is better), on CIFAR-10 in place of Tiny-ImageNet",
           (Row("Simple", "erm"), Row("Mixup", "mixup"), Row("Cutmix", "cutmix"), Row("Co-Mixup", "comixup"),
            Row("Ours (k=2)", _TM), Row("Ours (k=3)", _TM, {"k": 3})),
           (Column("CIFAR-10", "automix-cifar10-full", "cifar10-quick", value="accuracy", **_CIFAR_QUICK_NOTE),),
           None, lower_is_better=False,
           note="The paper's Table 7 is on Tiny-ImageNet (PreActResNet-18, 1,200 epochs), which this build does not "
                "load; the rows run on CIFAR-10 instead (the paper's numbers are shown below for context, not cell "
                "by cell). k = 3: Dirichlet(1) weights over three images, a mixing module searched for k = 3."),),
    paper_only=("transformmix-table7",)))

_GLOVE_WHY = ("needs the 300-d GloVe word vectors (glove.840B.300d), which mixlab neither stages nor loads (no issue "
              "plans them); the _rand rows run the same models with random embeddings")
_BERT_QUICK_WHY = ("fine-tuning the pre-trained encoder (MiniLM for BERT-base) for 8,000 steps per run is GPU work; "
                   "the quick table runs the random-embedding models")
#: (paper's model label, full protocol, quick protocol, reason the row cannot run at all)
_AMP_MODELS = (("RNN_rand", "amp-trec-rnn", "amp-trec-rnn-quick", ""), ("RNN_glove", None, None, _GLOVE_WHY),
               ("CNN_rand", "amp-trec-cnn", "amp-trec-cnn-quick", ""), ("CNN_glove", None, None, _GLOVE_WHY),
               ("BERT_base", "amp-trec-lowres-100", None, ""))
_AMP_METHODS = (("w/o", "erm"), ("Sent", "sentmixup"), ("Sent(our)", "amp+sentmixup"), ("Word", "wordmixup"),
                ("Word(our)", "amp+wordmixup"))
register(Reproduction(
    "amp-table2-trec", "AMP paper, Table 2: TREC rows (error %)",
    (Table("Table 2, TREC: test error %", tuple(
        Row(f"{model} {label}", method, protocol=protocol, quick=quick, unavailable=why,
            why_not_quick=_BERT_QUICK_WHY if protocol and not quick else "")
        for model, protocol, quick, why in _AMP_MODELS for label, method in _AMP_METHODS)
        + (Row("CNN_glove Non-linear (cited from Guo 2020)", "nonlinear-mixup",
               unavailable=f"{NOT_IMPLEMENTED['nonlinear-mixup']}; the row also {_GLOVE_WHY}"),),
        (Column("TREC", None),), "amp-table2-trec"),),
    notes="Each row names its protocol (model and embeddings) and method by registry name. BERT_base: MiniLM "
          "(all-MiniLM-L6-v2) stands in for BERT-base on the whole TREC training set, the protocol of Table 3's "
          "100 % row (the paper's Table 2 BERT row and Table 3 100 % row print the same numbers)."))

_T2_DATASETS = (("TREC", "trec"), ("SST-1", "sst1"), ("SST-2", "sst2"), ("SUBJ", "subj"), ("MR", "mr"))
_SHARED = {"shared_dropout": True}


def _t2_rows(model: str) -> tuple[Row, ...]:
    """Table 2's rows of one backbone, plus AMP with shared dropout masks (ours: no paper number)."""
    rows = []
    for label, method in _AMP_METHODS:
        rows.append(Row(label, method, paper=f"{model} {label}"))
        if method.startswith("amp+"):
            rows.append(Row(f"{label}, shared dropout", method, _SHARED))
    return tuple(rows)


def _t2_cols(tag: str, quick: bool, why: str = "") -> tuple[Column, ...]:
    return tuple(Column(label, f"amp-{ds}-{tag}", f"amp-{ds}-{tag}-quick" if quick else None, why)
                 for label, ds in _T2_DATASETS)


register(Reproduction(
    "amp-table2", "AMP paper, Table 2: five datasets, CNN-rand and RNN-rand (error %)",
    (Table("Table 2, CNN_rand (Kim CNN, random embeddings): test error %", _t2_rows("CNN_rand"), _t2_cols("cnn", True),
           "amp-table2"),
     Table("Table 2, RNN_rand (BiLSTM with attention, random embeddings): test error %", _t2_rows("RNN_rand"),
           _t2_cols("rnn", False, "the BiLSTM takes about 10x Kim CNN's step time on a CPU (the TREC RNN rows: "
                                  "`amp-table2-trec --quick`)"), "amp-table2")),
    notes="Final-step test error, mean ± std over trials (seeds). SUBJ and MR: 10-fold cross-validation, each trial's "
          "number the mean over its folds (the quick protocols: one fold per trial, trial s on fold s, so their "
          "spread includes the folds'). Rows `, shared dropout`: AMP whose two forward passes draw the same dropout "
          "masks (`shared_dropout=true`), so that its max step acts through lambda alone; not in the paper. "
          "The paper's GloVe and BERT rows need embeddings or weights this build does not ship (MiniLM stands in "
          "for BERT in Table 3 only)."))

register(Reproduction(
    "amp-table4", "AMP paper, Table 4: ablation of MaxOp and MinOp on TREC (error %), with Kim CNN-rand",
    (Table("Table 4 on TREC with CNN_rand: test error %", (
        Row("Baseline", "erm"),
        Row("Word +RandOp", "wordmixup"), Row("Word +MaxOp", "amp+wordmixup", {"min_op": False}),
        Row("Word AMP", "amp+wordmixup"),
        Row("Sent +RandOp", "sentmixup"), Row("Sent +MaxOp", "amp+sentmixup", {"min_op": False}),
        Row("Sent AMP", "amp+sentmixup")),
        (Column("TREC", "amp-trec-cnn", "amp-trec-cnn-quick"),), None),),
    notes="+MaxOp: `min_op=false`, AMP's step on lambda with the re-mixed sample's loss for every sample (no "
          "comparison with the first loss). The paper's ablation uses CNN_glove and BERT_base, which this build does "
          "not have: its numbers are shown below for context, not cell by cell.",
    paper_only=("amp-table4",)))

_AMP_LOW = (3, 4, 5, 10, 15, 20, 40, 80, 100)
_AMP_LOW_LABELS = ("3% (160)", "4% (215)", "5% (270)", "10% (543)", "15% (815)", "20% (1089)", "40% (2179)",
                   "80% (4359)", "100% (5452)")
register(Reproduction(
    "amp-table3", "AMP paper, Table 3: low-resource TREC with BERT_base (error %)",
    (Table("Table 3: test error % by fraction of TREC training data", _rows([("Sent", "sentmixup"),
                                                                         ("Sent(our)", "amp+sentmixup")]),
           tuple(Column(label, lowres_protocol(pct), lowres_protocol(pct, quick=True))
                 for pct, label in zip(_AMP_LOW, _AMP_LOW_LABELS)), "amp-table3", transpose_paper=True),),
    notes="With --quick every column runs Kim's CNN-rand (128-d) instead of the pre-trained encoder (see "
          "Protocols): the errors are not the paper's; the gap between Sent and Sent(our) per fraction is what the "
          "quick run can show."))

__all__ = ["Row", "Column", "Table", "Reproduction", "REPRODUCTIONS", "register", "get_reproduction",
           "run_reproduction", "paper_numbers"]
