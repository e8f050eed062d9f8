"""Bad input is refused with a message that says what is allowed; no value is silently replaced by a default."""
import argparse

import pytest

from mixlab.cli import build_parser, main


def numeric_actions():
    """(command path, flag, action) for every option of every sub-command that takes a value."""
    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, path + [name])
            elif action.option_strings and action.nargs != 0:
                yield path, action.option_strings[-1], action

    return list(walk(build_parser(), []))


def test_every_numeric_flag_is_range_checked():
    actions = numeric_actions()
    assert len(actions) > 60
    bare = [f"{' '.join(path)} {flag}" for path, flag, a in actions if a.type in (int, float)]
    assert not bare, f"numeric flags parsed without a range check: {bare}"


@pytest.mark.parametrize("path,flag,action", [a for a in numeric_actions() if hasattr(a[2].type, "allowed")],
                         ids=lambda v: v if isinstance(v, str) else None)
def test_out_of_range_numbers_name_the_flag_and_the_range(path, flag, action, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*path, flag, "nan"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and f"must be {action.type.allowed}" in err


@pytest.mark.parametrize("argv,flag,allowed", [
    (["train", "--subset-per-class", "0"], "--subset-per-class", "an integer >= 1"),
    (["bench", "--protocol", "digits-quick", "--epochs", "0"], "--epochs", "an integer >= 1"),
    (["bench", "--protocol", "digits-quick", "--trials", "0"], "--trials", "an integer >= 1"),
    (["train", "--lr", "-0.1"], "--lr", "a number > 0"),
    (["train", "--threads", "0"], "--threads", "an integer >= 1"),
    (["train", "--milestones", "50,0"], "--milestones", "an integer >= 1"),
    (["bench-ot", "--relax", "2"], "--relax", "a number in (0, 2)"),
    (["reproduce", "automix-table4", "--trials", "0"], "--trials", "an integer >= 1"),
])
def test_zero_is_refused_not_read_as_the_default(argv, flag, allowed, tmp_path, capsys):
    """`--subset-per-class 0` used to train on the whole set; `bench --epochs 0 --trials 0` ran 15 epochs, 1 trial."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be {allowed}" in err
    assert not any(tmp_path.iterdir()), "a refused command wrote to --out"


@pytest.mark.parametrize("field,value,words", [
    ("subset_per_class", 0, "subset_per_class must be an integer >= 1, or None (the whole training set); got 0"),
    ("epochs", 0, "epochs must be an integer >= 1"), ("test_limit", 0, "test_limit must be an integer >= 1"),
    ("holdout_per_class", 0, "holdout_per_class"), ("lr", float("nan"), "lr must be a number > 0"),
    ("momentum", 1.0, "momentum must be a number in [0, 1)"), ("max_steps", 0, "max_steps"),
    ("batch_size", 2.5, "batch_size must be an integer >= 1"), ("grad_clip", 0.0, "grad_clip"),
    ("milestones", (50, -1), "milestones"), ("eval_every", -1, "eval_every must be an integer >= 0"),
])
def test_train_config_refuses_out_of_range_values(field, value, words):
    from mixlab.train import TrainConfig

    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TrainConfig(**{field: value})
    TrainConfig(subset_per_class=None, test_limit=None, holdout_per_class=None, max_steps=None, grad_clip=None)


def test_python_apis_refuse_zero_trials(tmp_path):
    from mixlab.cli.bench import run_protocol
    from mixlab.protocols import get_protocol
    from mixlab.reproduce import run_reproduction

    with pytest.raises(ValueError, match="trials must be an integer >= 1"):
        run_protocol(get_protocol("digits-quick"), ["erm"], 0, tmp_path)
    with pytest.raises(ValueError, match="trials must be an integer >= 1, or None"):
        run_reproduction("automix-table4", out=tmp_path, quick=True, trials=0)
