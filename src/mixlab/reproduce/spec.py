"""What a reproduction is: :class:`Reproduction` s of :class:`Table` s of :class:`Row` s (methods) and
:class:`Column` s (protocols), read from ``mixlab/data/reproductions.json`` (each with its source), and the papers'
own numbers (``mixlab/data/paper_numbers.json``)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from ..registry import Registry


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
    source: str = ""  # the paper (its entry in paper_numbers.json "papers")


REPRODUCTIONS = Registry("reproduction")


def get_reproduction(name: str) -> Reproduction:
    return REPRODUCTIONS.get(name)


def paper_numbers() -> dict:
    """The papers' printed numbers (``mixlab/data/paper_numbers.json``)."""
    return json.loads(resources.files("mixlab").joinpath("data/paper_numbers.json").read_text())


def paper_cell(numbers: dict, t: Table, r: Row, c: Column) -> tuple[float, float | None] | None:
    if not t.paper_key:
        return None
    rows = numbers["tables"][t.paper_key]["rows"]
    a, b = (c.paper or c.label), (r.paper or r.label)
    if not t.transpose_paper:
        a, b = b, a
    v = rows.get(a, {}).get(b)
    return None if v is None else (v[0], v[1])


def rows(pairs, **kw) -> tuple[Row, ...]:
    """Rows from ``(label, method)`` pairs, with the same options ``kw`` for each."""
    return tuple(Row(label, method, **kw) for label, method in pairs)


def load_reproductions(text: str | None = None) -> list[Reproduction]:
    """The reproductions of ``mixlab/data/reproductions.json`` (or of the JSON ``text``)."""
    data = json.loads(text if text is not None else
                      resources.files("mixlab").joinpath("data/reproductions.json").read_text())

    def table(t: dict) -> Table:
        return Table(**{**t, "rows": tuple(Row(**r) for r in t["rows"]),
                        "columns": tuple(Column(**c) for c in t["columns"])})

    return [Reproduction(**{**r, "tables": tuple(table(t) for t in r["tables"]),
                            "paper_only": tuple(r.get("paper_only", ()))}) for r in data["reproductions"]]


for _reproduction in load_reproductions():
    REPRODUCTIONS.register(_reproduction.name, _reproduction, _reproduction.title)
