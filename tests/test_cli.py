"""The mixlab command: JSON contracts, report, show, data verify, clear errors."""
import json
import subprocess
import sys

import pytest

from mixlab.cli import main

SMALL = ["--dataset", "digits", "--model", "cnn11", "--model-arg", "width=0.25", "--epochs", "2", "--lr", "0.05",
         "--no-progress"]


def last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_train_json_keys(tmp_path, capsys):
    assert main(["train", *SMALL, "--method", "cutmix", "--seed", "3", "--out", str(tmp_path), "--json"]) == 0
    d = last_json(capsys)
    for key in ("method", "dataset", "model", "seed", "epochs", "test_error", "test_top5_error", "train_seconds",
                "samples_per_second"):
        assert key in d
    assert d["method"] == "cutmix" and d["seed"] == 3 and d["epochs"] == 2 and 0 <= d["test_error"] <= 100


def test_bench_json_report_and_resume(tmp_path, capsys):
    args = ["bench", "--protocol", "digits-quick", "--methods", "erm,mixup", "--trials", "2", "--epochs", "1",
            "--out", str(tmp_path), "--json", "--no-progress"]
    assert main(args) == 0
    d = last_json(capsys)
    assert set(d["methods"]) == {"erm", "mixup"}
    m = d["methods"]["mixup"]
    assert len(m["errors"]) == 2 and m["mean_error"] == pytest.approx(sum(m["errors"]) / 2)
    assert main(args) == 0  # second time: nothing re-run
    assert capsys.readouterr().out.count("done already") == 4
    assert main(["report", "--out", str(tmp_path), "--json"]) == 0
    rows = last_json(capsys)
    assert {r["method"] for r in rows} == {"erm", "mixup"} and all(r["trials"] == 2 for r in rows)
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert "mixup" in capsys.readouterr().out
    assert main(["report", "--out", str(tmp_path), "--paired", "erm", "--json"]) == 0  # mixup - erm, seed by seed
    (paired,) = last_json(capsys)
    erm = {r["method"]: r for r in rows}["erm"]
    assert paired["method"] == "mixup" and paired["base"] == "erm" and paired["paired_seeds"] == [0, 1]
    assert paired["diffs"] == pytest.approx([a - b for a, b in zip(m["errors"], erm["errors"])])
    assert main(["report", "--out", str(tmp_path), "--paired", "erm"]) == 0
    assert "s0: " in capsys.readouterr().out


def test_bench_method_arg_and_validation_holdout(tmp_path, capsys):
    from mixlab.results import ResultsStore

    args = ["bench", "--protocol", "digits-quick", "--methods", "mixup", "--trials", "1", "--epochs", "1",
            "--method-arg", "alpha=0.4", "--holdout-per-class", "5", "--out", str(tmp_path), "--json", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "validation holdout" in out
    (run,) = ResultsStore(tmp_path).runs()
    assert run["config"]["method_kwargs"] == {"alpha": 0.4} and run["config"]["holdout_per_class"] == 5
    assert run["metrics"]["test_set"].startswith("validation: 5 per class")
    args.remove("--holdout-per-class")
    args.remove("5")
    assert main(args) == 0  # the same run on the test set: its own row, its own "evaluated on"
    capsys.readouterr()
    assert main(["report", "--out", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "mixup" in line]
    assert len(lines) == 2 and "validation (5/class)" in lines[0] and " test " in lines[1]
    assert all("options: alpha=0.4" in line for line in lines)  # the method options behind each row
    assert not any("holdout" in line for line in lines)


def test_bench_skips_a_run_another_process_is_training(tmp_path, capsys):
    from mixlab.protocols import get_protocol
    from mixlab.locks import run_lock

    config = get_protocol("digits-quick").train_config("mixup", 0, epochs=1)
    with run_lock(tmp_path / "runs" / config.run_id()):  # "another process" is training mixup seed 0
        args = ["bench", "--protocol", "digits-quick", "--methods", "erm,mixup", "--trials", "1", "--epochs", "1",
                "--out", str(tmp_path), "--json", "--no-progress"]
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "mixup seed 0: skipped" in out and "another process" in out
    assert set(json.loads(out.strip().splitlines()[-1])["methods"]) == {"erm"}


def test_show_writes_png(tmp_path):
    path = tmp_path / "grid.png"
    assert main(["show", "--method", "mixup", "--dataset", "digits", "--pairs", "3", "--out", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_verify(data_root, capsys):
    assert main(["data", "verify", "--data-dir", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "mnist            train  ok" in out and "kmnist" in out


def test_unknown_names_exit_2(tmp_path, capsys):
    assert main(["train", "--method", "mixpu", "--out", str(tmp_path)]) == 2
    assert "unknown method 'mixpu'" in capsys.readouterr().err
    assert main(["bench", "--protocol", "nope"]) == 2
    assert "unknown protocol" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "mixlab", "methods"], capture_output=True, text=True, check=True)
    assert "mixup" in out.stdout and "cnn11" in out.stdout
