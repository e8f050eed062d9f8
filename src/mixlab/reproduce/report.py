"""The Markdown report of a reproduction: our numbers beside the paper's, the protocols, what was scaled, figures."""
from __future__ import annotations

import json
from pathlib import Path

from ..machine import machine
from ..results import describe_diverged
from ..results.store import format_options, mean_std
from .figures import make_figure
from .spec import Reproduction, paper_cell, paper_numbers


def fmt(mean: float, std: float | None, digits: int | None = None) -> str:
    """``mean ± std``; 3 decimals below 1 (e.g. MNIST full errors), else 2. Paper numbers: as printed."""
    if digits is None:
        digits = 3 if abs(mean) < 1 else 2
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def fmt_paper(v: tuple[float, float | None]) -> str:
    return f"{v[0]:g}" + (f" ± {v[1]:g}" if v[1] is not None else "")


def write_report(rep: Reproduction, grid, quick: bool, report_dir: Path, out, wall: float, trained: int,
                 total: int, data_dir, command: str | None, skipped: int = 0, diverged: list | None = None,
                 missing: int = 0, part: str = "") -> Path:
    from ..protocols import PROTOCOLS

    numbers = paper_numbers()
    m = machine()
    lines = [f"# {rep.title}{' (--quick)' if quick else ''}", ""]
    lines += ["Written by `mixlab reproduce`; every number and figure below comes from the command's runs or from "
              "`mixlab/data/paper_numbers.json` (the papers' printed numbers, with their source).", ""]
    lines += ([f"- paper: {rep.source}"] if rep.source else []) + [
              f"- command: `{command or 'mixlab reproduce ' + rep.name + (' --quick' if quick else '')}`",
              f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, "
              f"python {m['python']}, {m['platform']}" + (f", GPU {m['gpu']}" if m['gpu'] else ""),
              f"- wall time of this invocation: {wall:.0f} s; runs: {total} in all, {trained} trained now, "
              f"{total - trained - skipped - missing} found in `OUT/results.db` (OUT: the --out folder)"
              + (f", **{missing} not trained** (`--report-only`: the cells count only trials whose runs are all "
                 f"in the store)" if missing else "")
              + (f", **{skipped} skipped** (another process was training them in this output folder: run the "
                 f"command again when it has finished to include them)" if skipped else "")]
    if part:
        lines += [f"- part of the reproduction only: {part}"]
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
