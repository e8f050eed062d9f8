"""Every reproduce target resolves: each cell runs, or says a documented reason why not; reports show no paths."""
import re
from pathlib import Path

import pytest

from mixlab import reproduce
from mixlab.cli import main

REPO = Path(__file__).resolve().parents[1]
ABSOLUTE = re.compile(r"(^|[\s`'\"(=])(/|~/|[A-Za-z]:\\\\)[\w.-]")  # a path from the file system's root or home


@pytest.fixture
def all_staged(monkeypatch):
    """Resolve as on a machine where every dataset is staged (the targets themselves are under test)."""
    monkeypatch.setattr(reproduce.run, "dataset_state", lambda name, data_dir: "staged")


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_every_cell_of_every_target_resolves_or_says_a_documented_reason(quick, all_staged):
    """amp-table2-trec (26 of 26), amp-table3 (18 of 18) and automix-table6 (8 of 14) used to name protocols and
    options that do not exist."""
    unexplained, available = [], {}
    for name in reproduce.REPRODUCTIONS.names():
        grid, jobs = reproduce.resolve_all(reproduce.get_reproduction(name), quick, None, None)
        cells = [cell for table in grid for row in table for cell in row]
        for cell in cells:
            if cell.unavailable and not (cell.documented and len(cell.unavailable) > 20):
                unexplained.append(f"{name}: {cell.unavailable}")
            assert bool(cell.unavailable) != bool(cell.run_ids)
        available[name] = sum(not cell.unavailable for cell in cells)
    assert not unexplained, "\n".join(unexplained)
    assert available["amp-table3"] == 18 and available["automix-table6"] == (0 if quick else 14)
    assert available["amp-table2-trec"] == (10 if quick else 15)  # RNN_rand, CNN_rand (+ BERT_base when full)


def test_automix_resolves_in_table5_and_the_ablations_set_real_options(all_staged):
    grid, _ = reproduce.resolve_all(reproduce.get_reproduction("automix-table5"), True, None, None)
    miml = reproduce.get_reproduction("automix-table5").tables[1]
    row = [r.method for r in miml.rows].index("automix-zhu")
    assert not grid[1][row][0].unavailable and len(grid[1][row][0].run_ids) == 3
    rows = reproduce.get_reproduction("automix-table6").tables[0].rows
    assert {r.kwargs.get("label_strategy") for r in rows} == {"first", "half", "multilabel", None}
    # the two rows that are AutoMix as it is (label (d), random pairs) share their runs: trained once
    grid, _ = reproduce.resolve_all(reproduce.get_reproduction("automix-table6"), False, None, 1)
    defaults = [cells[0].run_ids for r, cells in zip(rows, grid[0]) if not r.kwargs]
    assert len(defaults) == 2 and defaults[0] == defaults[1] and defaults[0]


def test_dataset_not_staged_is_a_documented_reason(tmp_path):
    rep = reproduce.get_reproduction("amp-table3")
    grid, jobs = reproduce.resolve_all(rep, True, str(tmp_path / "empty"), None)
    cell = grid[0][0][0]
    assert cell.documented and cell.unavailable.startswith("dataset not staged: `trec`") and not jobs
    mnist = reproduce.get_reproduction("automix-table4")
    grid, jobs = reproduce.resolve_all(mnist, True, str(tmp_path / "empty"), None)
    assert jobs and "downloaded from its official source on first use" in grid[0][0][1].note  # mnist: downloadable
    assert not (tmp_path / "empty").exists()


def test_dry_run_prints_every_cell_and_writes_nothing(tmp_path, capsys, all_staged):
    assert main(["reproduce", "automix-table6", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n- ") == 14 and "options {'label_strategy': 'multilabel'}" in out
    assert "14 cells: 14 available, 0 unavailable for a documented reason, 0 unavailable without one" in out
    assert not (tmp_path / "out").exists()
    assert main(["reproduce", "amp-table2-trec", "--quick", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "RNN_glove Sent | TREC: `sentmixup`: UNAVAILABLE (needs the 300-d GloVe word vectors" in out
    assert "26 cells: 10 available, 16 unavailable for a documented reason, 0 unavailable without one" in out


def test_dry_run_fails_on_a_cell_without_a_documented_reason(tmp_path, capsys, monkeypatch, all_staged):
    rep = reproduce.Reproduction("test-broken", "broken", (reproduce.Table(
        "t", reproduce.rows([("Mixup", "mixup"), ("Unknown", "no-such-method"), ("StyleCutMix", "stylecutmix")]),
        (reproduce.Column("digits", "digits-quick", "digits-quick"),
         reproduce.Column("typo", "no-such-protocol", "no-such-protocol"))),),)
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-broken", rep)
    assert main(["reproduce", "test-broken", "--quick", "--dry-run", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "NOT DOCUMENTED: protocol `no-such-protocol` not available" in out
    assert "NOT DOCUMENTED: method `no-such-method` not available" in out
    assert "UNAVAILABLE (method not implemented: StyleCutMix (AlignMixup paper's comparison) is not in mixlab" in out
    assert "6 cells: 1 available, 1 unavailable for a documented reason, 4 unavailable without one" in out


def test_report_commands_show_placeholders_not_machine_paths(tmp_path, monkeypatch, capsys):
    from mixlab.cli.reproduce import shown_command
    from mixlab.protocols import PROTOCOLS, Protocol

    assert shown_command(["reproduce", "x", "--out", "/srv/o", "--data-dir=../d", "--report-dir", "docs/r",
                          "--threads", "1"]) == "mixlab reproduce x --out OUT --data-dir=DATA --report-dir docs/r --threads 1"
    monkeypatch.setitem(PROTOCOLS, "test-tiny", Protocol(
        "test-tiny", "digits, 1 epoch", dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.25},
                                              epochs=1, subset_per_class=5, test_limit=50), ("erm",), trials=1))
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-tiny", reproduce.Reproduction("test-tiny", "tiny", (
        reproduce.Table("t", reproduce.rows([("Baseline", "erm")]), (reproduce.Column("d", "test-tiny", "test-tiny"),),
                        figure=None),)))
    out, report = tmp_path / "out", tmp_path / "report"
    argv = ["reproduce", "test-tiny", "--quick", "--out", str(out), "--data-dir", str(tmp_path / "data"),
            "--report-dir", str(report), "--no-progress"]
    monkeypatch.setattr("sys.argv", ["mixlab", *argv])
    assert main([*argv, "--report-only"]) == 0  # nothing trained yet, and the report says so
    assert "**1 not trained**" in (report / "report.md").read_text() and not list(out.glob("runs/*"))
    assert main(argv) == 0
    text = (report / "report.md").read_text()
    assert "`mixlab reproduce test-tiny --quick --out OUT --data-dir DATA --report-dir REPORT_DIR --no-progress`" in text
    for path in (report / "report.md", report / "results.json"):
        assert str(tmp_path) not in path.read_text() and not ABSOLUTE.search(path.read_text()), path


def test_committed_reports_show_no_machine_paths():
    files = sorted((REPO / "docs" / "results").glob("*/*.md")) + sorted((REPO / "docs" / "results").glob("*/*.json"))
    assert files
    bad = [f"{f.relative_to(REPO)}: {m.group(0)!r}" for f in files for m in ABSOLUTE.finditer(f.read_text())]
    assert not bad, "\n".join(bad)
