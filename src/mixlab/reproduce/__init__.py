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
from .figures import make_figure
from .report import fmt, invocations, write_report
from .run import (NOT_IMPLEMENTED, Cell, dataset_state, dry_run, method_unavailable, model_unavailable, read_value,
                  Selection, resolve, resolve_all, run_reproduction, train_configs)
from .spec import (REPRODUCTIONS, Column, Reproduction, Row, Table, get_reproduction, load_reproductions,
                   paper_cell, paper_numbers, rows)

__all__ = ["Row", "Column", "Table", "Reproduction", "REPRODUCTIONS", "get_reproduction", "rows",
           "load_reproductions", "run_reproduction", "dry_run", "resolve", "resolve_all", "paper_numbers",
           "paper_cell", "write_report", "make_figure", "method_unavailable", "model_unavailable", "dataset_state",
           "read_value", "train_configs", "Cell", "NOT_IMPLEMENTED", "fmt", "invocations", "Selection"]
