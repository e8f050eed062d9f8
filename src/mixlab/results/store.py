"""The results store: one SQLite database per output folder, one row per finished run.

Each row is written in a single transaction (SQLite's journal makes it atomic), so an interrupted process
never leaves a half row; unfinished runs live only in their checkpoints until they finish. A row's ``status`` is
``ok``, or ``diverged`` for a run stopped by a non-finite training loss (no test error; its metrics say at which
epoch and step): such runs are listed apart (:func:`diverged_runs`) and never averaged (:func:`summarize`).
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path

from ..machine import versions

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    protocol TEXT,
    method TEXT NOT NULL,
    dataset TEXT NOT NULL,
    model TEXT NOT NULL,
    seed INTEGER NOT NULL,
    epochs INTEGER,
    test_error REAL,
    test_top5_error REAL,
    train_seconds REAL,
    samples_per_second REAL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok'
);
CREATE TABLE IF NOT EXISTS evals (
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
"""


COLUMNS = ("run_id", "created", "protocol", "method", "dataset", "model", "seed", "epochs", "test_error",
           "test_top5_error", "train_seconds", "samples_per_second", "config", "metrics", "versions", "status")


class ResultsStore:
    """``results.db`` in an output folder."""

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / "results.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(runs)")}
            if "status" not in columns:  # a store written before runs had a status: all its rows finished normally
                db.execute("ALTER TABLE runs ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.row_factory = sqlite3.Row
        return db

    def add_run(self, result: dict, config: dict) -> None:
        row = (result["run_id"], time.time(), config.get("protocol"), result["method"], result["dataset"],
               result["model"], int(result["seed"]), result.get("epochs"), result.get("test_error"),
               result.get("test_top5_error"), result.get("train_seconds"), result.get("samples_per_second"),
               json.dumps(config, sort_keys=True, default=str), json.dumps(result, sort_keys=True, default=str),
               json.dumps(versions(), sort_keys=True), result.get("status", "ok"))
        with self._connect() as db:  # one transaction: the row lands whole or not at all
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(row))})", row)

    def add_eval(self, run_id: str, kind: str, metrics: dict) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?,?)",
                       (run_id, kind, time.time(), json.dumps(metrics, sort_keys=True, default=str)))

    def has_run(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def get_run(self, run_id: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _decode(row) if row else None

    def runs(self, **where) -> list[dict]:
        clauses = " AND ".join(f"{k} = ?" for k in where)
        sql = "SELECT * FROM runs" + (f" WHERE {clauses}" if clauses else "") + " ORDER BY created"
        with self._connect() as db:
            return [_decode(r) for r in db.execute(sql, tuple(where.values())).fetchall()]

    def evals(self, run_id: str | None = None) -> list[dict]:
        sql = "SELECT * FROM evals" + (" WHERE run_id = ?" if run_id else "") + " ORDER BY created"
        with self._connect() as db:
            rows = db.execute(sql, (run_id,) if run_id else ()).fetchall()
        return [dict(r, metrics=json.loads(r["metrics"])) for r in rows]


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    for key in ("config", "metrics", "versions"):
        d[key] = json.loads(d[key])
    return d


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_mean_std(mean: float, std: float, n: int, width: int = 0, sign: bool = False) -> str:
    """``mean +- std`` over ``n`` values; a single value has no spread, so ``mean (n=1)``. ``sign``: ``+0.20``."""
    m = f"{mean:+.2f}" if sign else f"{mean:.2f}"
    text = f"{m} +- {std:.2f}" if n > 1 else f"{m} (n=1)"
    return f"{text:>{width}}"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


#: per-run numbers that a cross-validated trial averages over its folds (besides test_error)
FOLD_MEANS = ("test_error", "dev_selected_test_error", "best_test_error_over_steps")


def combine_folds(runs: list[dict]) -> dict:
    """One trial of a cross-validated protocol: its fold runs (same method and seed) as one run whose
    ``test_error`` and selected errors are the means over the folds; ``config`` without the fold, ``folds`` and
    ``fold_errors`` listed, ``train_seconds`` summed. A single run comes back as it is."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    config = json.loads(json.dumps(first.get("config") or {}))
    folds = [((r.get("config") or {}).get("data_kwargs") or {}).get("fold") for r in runs]
    config.get("data_kwargs", {}).pop("fold", None)
    metrics = dict(first.get("metrics") or {})
    for key in FOLD_MEANS:
        values = [(r.get("metrics") or {}).get(key, r.get(key)) for r in runs]
        metrics[key] = None if any(v is None for v in values) else sum(values) / len(values)
    return {**first, "run_id": "+".join(r["run_id"] for r in runs), "config": config, "metrics": metrics,
            "test_error": metrics["test_error"], "folds": folds, "fold_errors": [r.get("test_error") for r in runs],
            "train_seconds": sum(r.get("train_seconds") or 0 for r in runs)}


def _trial_config(run: dict) -> dict:
    """A run's config without what varies between the runs of one row: the seed and ``data_kwargs.fold``."""
    config = {k: v for k, v in (run.get("config") or {}).items() if k != "seed"}
    data = config.get("data_kwargs") or {}
    if "fold" in data:
        config["data_kwargs"] = {k: v for k, v in data.items() if k != "fold"}
    return config


def combine_trials(runs) -> list[dict]:
    """Cross-validated runs as trials: the fold runs of one configuration and seed combined by
    :func:`combine_folds` (in first-seen order); runs without folds, and a trial of one fold (the quick protocols:
    trial s on fold s), come back as they are."""
    trials: dict[tuple, list[dict]] = {}
    for r in runs:
        config = _trial_config(r)
        key = (r.get("protocol"), r.get("dataset"), r.get("model"), r.get("method"), r.get("seed"),
               json.dumps(config, sort_keys=True, default=str))
        trials.setdefault(key, []).append(r)
    return [combine_folds(members) for members in trials.values()]


def format_options(options: dict | None) -> str:
    """Method options as ``--method-arg`` writes them: ``m=2, mix_at=feature-map, mean_loss=true`` ("" if none)."""
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted((options or {}).items()))


def summarize(runs: list[dict], keys=("protocol", "dataset", "model", "method"), metric: str = "test_error") -> list[dict]:
    """Group runs by ``keys`` and give mean +- std of ``metric`` over seeds, in first-seen order.

    Runs whose configs differ other than in the seed (e.g. a method option changed between two benches into the
    same store) are never averaged together: each configuration is its own row, and where ``keys`` alone do not
    tell them apart the row's ``variant`` names the differing settings (``""`` otherwise). ``evaluated_on`` says
    whether the runs' error is on the test set or on a validation holdout (``--holdout-per-class``).
    ``options`` lists the method options the runs were trained with (the protocol's and the user's), always.
    """
    groups: dict[tuple, list[dict]] = {}
    flat: dict[tuple, dict] = {}  # each group's config (seed and fold left out), flattened to "a.b" keys
    for r in combine_trials(r for r in runs if r.get(metric) is not None and r.get("status", "ok") == "ok"):
        config = _trial_config(r)
        group = (tuple(r.get(k) for k in keys), json.dumps(config, sort_keys=True, default=str))
        groups.setdefault(group, []).append(r)
        flat.setdefault(group, _flat(config))
    variants: dict[tuple, list[dict]] = {}
    for group in groups:
        variants.setdefault(group[0], []).append(flat[group])
    rows = []
    for group, members in groups.items():
        key, siblings = group[0], variants[group[0]]
        differing = sorted(k for k in set().union(*siblings)
                           if len({v.get(k) for v in siblings}) > 1 and k != "holdout_per_class")  # own column
        label = ", ".join(f"{k}={flat[group].get(k, '-')}" for k in differing)
        vals = [m[metric] for m in members]
        mean, std = mean_std(vals)
        holdout = (members[0].get("config") or {}).get("holdout_per_class")
        options = format_options((members[0].get("config") or {}).get("method_kwargs"))
        rows.append({**dict(zip(keys, key)), "variant": label, "options": options,
                     "evaluated_on": f"validation ({holdout}/class)" if holdout else "test",
                     "trials": len(vals), "mean_error": mean,
                     "std_error": std, "errors": vals, "seeds": [m["seed"] for m in members],
                     "train_seconds": sum(m.get("train_seconds") or 0 for m in members) / len(members)})
    return rows


def paired_differences(rows: list[dict], base: str) -> list[dict]:
    """Each :func:`summarize` row against a base row of the same protocol, dataset and model, seed by seed: the
    mean +- std of ``row error - base error`` over the seeds both have (same seed: same initialisation, data
    order and fold), which removes the seed-to-seed spread the two rows share.

    ``base``: a method name (``"sentmixup"``), or ``"METHOD (OPTIONS)"`` with the options as the rows show them
    (``"amp+sentmixup (shared_dropout=true)"``) where one method has several rows; a bare name picks that
    method's row with the fewest options. Rows whose group has no base row, and the base row itself, are left out.
    Returns dicts with the row's keys plus ``base``, ``mean_diff``, ``std_diff``, ``diffs``, ``paired_seeds``.
    """
    name, _, opts = base.partition(" (")
    opts = opts[:-1] if opts.endswith(")") else opts
    group = lambda r: (r.get("protocol"), r.get("dataset"), r.get("model"))  # noqa: E731
    bases: dict[tuple, dict] = {}
    for r in rows:
        if r["method"] != name or (opts and r["options"] != opts):
            continue
        seen = bases.get(group(r))
        if seen is not None and len(seen["options"]) == len(r["options"]):
            raise ValueError(f"base {base!r} matches two rows of {group(r)} (options {seen['options']!r} and "
                             f"{r['options']!r}); name one as 'METHOD (OPTIONS)'")
        if seen is None or len(r["options"]) < len(seen["options"]):
            bases[group(r)] = r
    if not bases:
        raise ValueError(f"no row of method {base!r} in the selected runs (mixlab report lists the rows)")
    out = []
    for r in rows:
        b = bases.get(group(r))
        if b is None or r is b:
            continue
        theirs = dict(zip(b["seeds"], b["errors"]))
        pairs = [(s, e - theirs[s]) for s, e in zip(r["seeds"], r["errors"]) if s in theirs]
        if not pairs:
            continue
        seeds, diffs = (list(t) for t in zip(*pairs))
        mean, std = mean_std(diffs)
        out.append({**r, "base": b["method"] + (f" ({b['options']})" if b["options"] else ""), "mean_diff": mean,
                    "std_diff": std, "diffs": diffs, "paired_seeds": seeds})
    return out


def diverged_runs(runs: list[dict]) -> list[dict]:
    """The runs stopped by a non-finite training loss, one entry each (they have no error to average)."""
    out = []
    for r in runs:
        if r.get("status", "ok") == "diverged":
            m = r.get("metrics") or r
            out.append({"status": "diverged", "run_id": r["run_id"], "protocol": r.get("protocol"),
                        "dataset": r["dataset"], "model": r["model"], "method": r["method"], "seed": r["seed"],
                        "diverged_epoch": m.get("diverged_epoch"), "diverged_step": m.get("diverged_step")})
    return out


def describe_diverged(d: dict) -> str:
    """One line for a diverged run (``diverged_runs`` entry)."""
    return (f"{d['method']} seed {d['seed']} ({d['run_id']}): diverged at epoch {d['diverged_epoch']}, "
            f"step {d['diverged_step']}")


def step_curves(runs: list[dict], key: str = "dev_error") -> dict[str, dict[str, tuple[list, list]]]:
    """Per dataset, per run (``method s<seed>``, with the fold for cross-validated runs): ``(steps, values)`` of
    ``key`` from the run's periodic evaluations (text runs with ``eval_steps``); runs without them are left out."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for r in runs:
        points = [h for h in (r.get("metrics") or {}).get("history", []) if "step" in h and h.get(key) is not None]
        if not points:
            continue
        fold = ((r.get("config") or {}).get("data_kwargs") or {}).get("fold")
        label = f"{r['method']} s{r['seed']}" + (f" fold {fold}" if fold is not None else "")
        out.setdefault(r["dataset"], {})[label] = ([h["step"] for h in points], [h[key] for h in points])
    return out


def levelled_off(steps: list, values: list, window: int = 5, tol: float = 1.0):
    """Where a learning curve has levelled off: the first step at which the moving average of ``values`` (over
    ``window`` evaluations) comes within ``tol`` (points) of its lowest value. A curve that rises again later
    (over-fitting) levels off before it rises; one still falling gives its last step. None if it has fewer than
    ``window`` points."""
    if len(values) < window:
        return None
    avg = [sum(values[i - window + 1:i + 1]) / window for i in range(window - 1, len(values))]
    low = min(avg)
    first = next(i for i, a in enumerate(avg) if a <= low + tol)
    return steps[first + window - 1]
