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


# ------------------------------------------------------------------------------------------ method options
def test_python_create_lists_the_options_of_the_method():
    import mixlab

    with pytest.raises(TypeError, match=r"method 'mixup' has no option 'foo'; options of method 'mixup': "
                                        r"alpha: float = 1.0, per_sample: bool = False"):
        mixlab.create("mixup", foo=1)
    with pytest.raises(TypeError, match=r"option alpha of method 'mixup' must be float, got 'abc'"):
        mixlab.create("mixup", alpha="abc")
    with pytest.raises(TypeError, match=r"no option 'alpa' \(did you mean alpha\?\).*epsilon: float = 0.002"):
        mixlab.create("amp+sentmixup", alpa=0.5)  # AMP's own options and its inner mixer's
    with pytest.raises(TypeError, match="option reg of method 'opttransmix\\+bc' must be float"):
        mixlab.create("opttransmix+bc", reg="small")
    with pytest.raises(TypeError, match="method 'erm' has no option 'alpha'; options of method 'erm': none"):
        mixlab.create("erm", alpha=1.0)
    with pytest.raises(TypeError, match="model 'cnn11' has no option 'widht' \\(did you mean width\\?\\)"):
        mixlab.create_model("cnn11", widht=0.5)
    assert mixlab.create("manifold", layers=[1, 2], alpha=1).layers == (1, 2)  # JSON lists for tuples, ints for floats


def test_every_method_and_model_lists_its_options():
    from mixlab.registry import METHODS, MODELS

    for registry in (METHODS, MODELS):
        for name in registry.names():
            assert registry.options(name) is not None, f"{registry.kind} {name}: options not known from its signature"


@pytest.mark.parametrize("argv,words", [
    (["train", "--method", "mixup", "--method-arg", "foo=1"], "method 'mixup' has no option 'foo'; options of "
                                                              "method 'mixup': alpha: float = 1.0, per_sample"),
    (["train", "--method", "mixup", "--method-arg", "alpha=abc"], "option alpha of method 'mixup' must be float"),
    (["train", "--method", "mixup", "--method-arg", "seed=3"], "seed of method 'mixup' is set by mixlab"),
    (["train", "--model-arg", "widht=0.5"], "model 'cnn11' has no option 'widht' (did you mean width?)"),
    (["bench", "--protocol", "digits-quick", "--methods", "mixup,cutmix", "--method-arg", "per_sample=true"],
     "method 'cutmix' has no option 'per_sample'; options of method 'cutmix': alpha: float = 1.0"),
    (["show", "--method", "cutmix", "--method-arg", "alpha=[1]"], "option alpha of method 'cutmix' must be float"),
    (["eval", "accuracy", "--run", "some-run", "--option", "n_bins=10"], "evaluation 'accuracy' has no option "
                                                                         "'n_bins'; options of evaluation "
                                                                         "'accuracy': none"),
])
def test_bad_options_are_refused_before_any_data_is_loaded(argv, words, tmp_path, capsys, monkeypatch):
    import mixlab.data
    import mixlab.train.engine

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr(mixlab.data, "load_dataset", no_data)
    monkeypatch.setattr(mixlab.train.engine, "load_dataset", no_data)
    out = tmp_path / ("grid.png" if argv[0] == "show" else "out")
    assert main([*argv, "--out", str(out)]) == 2
    assert words in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ show on text
def fake_text_data(monkeypatch):
    import torch

    import mixlab.data
    from mixlab.data.text import TextData

    sentences = [f"question number {i} ?" for i in range(12)]
    data = TextData("trec", "test", sentences, torch.arange(12) % 3, ["ABBR", "DESC", "ENTY"])
    monkeypatch.setattr(mixlab.data, "load_dataset", lambda *a, **k: data)
    return data


@pytest.mark.parametrize("method,site", [("wordmixup", "word embeddings"), ("sentmixup", "sentence vector"),
                                         ("amp+sentmixup", "AMP moves each lambda")])
def test_show_renders_text_mixes_as_text(method, site, tmp_path, capsys, monkeypatch):
    """`mixlab show --dataset trec --method mixup` was an AttributeError traceback."""
    data = fake_text_data(monkeypatch)
    assert main(["show", "--dataset", "trec", "--method", method, "--pairs", "3", "--out", str(tmp_path / "g.png")]) == 0
    text = (tmp_path / "g.txt").read_text()
    assert site in text and text in capsys.readouterr().out
    pairs = [block.splitlines() for block in text.split("\n\n")[1:] if block.strip()]
    assert len(pairs) == 3
    for lines in pairs:
        lam = float(lines[0].split("lam = ")[1].split()[0])
        a, b = lines[1].split("] ", 1)[1], lines[2].split("] ", 1)[1]
        assert a in data.text and b in data.text
        label_a, label_b = (data.classes[int(data.y[data.text.index(s)])] for s in (a, b))
        soft = dict(item.split(":") for item in lines[3].split("soft label: ")[1].split(", "))
        expected = {label_a: 1.0} if label_a == label_b else {label_a: lam, label_b: 1 - lam}
        top = dict(sorted(expected.items(), key=lambda kv: -kv[1])[:2])
        assert {k: float(v) for k, v in soft.items() if float(v) > 0.005} == pytest.approx(
            {k: v for k, v in top.items() if v > 0.005}, abs=0.006)


@pytest.mark.parametrize("method", ["mixup", "cutmix", "manifold", "erm"])
def test_show_refuses_image_mixers_on_text_and_names_the_text_mixers(method, tmp_path, capsys, monkeypatch):
    fake_text_data(monkeypatch)
    assert main(["show", "--dataset", "trec", "--method", method, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert f"{method} does not mix text" in err and "use wordmixup (word embeddings), sentmixup" in err
    assert not any(tmp_path.iterdir())
