"""Evaluation metrics against hand-computed cases and scikit-learn; open-set / noise properties; multi-label
training; loading runs; resumable reproduction sweeps."""
import json
import math

import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import mixlab
from mixlab.metrics import (alignment, auroc, average_precision, expected_calibration_error,
                                 mean_average_precision, ood_scores, topk_error, uniformity)
from mixlab.eval.noise import noise_curve, salt_and_pepper
from mixlab.eval.openset import openset_curves


# ------------------------------------------------------------------------------------------------ metrics
def test_topk_error_hand_case():
    logits = torch.tensor([[5., 4, 3, 2, 1, 0], [0., 1, 2, 3, 4, 5], [5., 4, 3, 2, 1, 0]])
    e = topk_error(logits, torch.tensor([0, 0, 5]), ks=(1, 5))
    assert e["top1_error"] == pytest.approx(100 * 2 / 3)
    assert e["top5_error"] == pytest.approx(100 * 2 / 3)  # rows 2 and 3: the true class is ranked last
    e2 = topk_error(logits[:1], torch.tensor([4]), ks=(1, 5))
    assert e2 == {"top1_error": 100.0, "top5_error": 0.0}
    assert topk_error(logits[:, :5], torch.tensor([0, 0, 4]))["top5_error"] is None  # 5 classes: undefined


def test_ece_hand_case():
    # confidences .85 (one right, one wrong) and .55 (both right); 10 bins:
    # ECE = 1/2 |0.5 - 0.85| + 1/2 |1 - 0.55| = 0.175 + 0.225 = 0.4
    probs = torch.tensor([[.85, .15], [.85, .15], [.55, .45], [.55, .45]])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.4, abs=1e-6)
    # perfectly calibrated in every bin -> 0
    probs = torch.tensor([[1.0, 0.0]] * 3)
    assert expected_calibration_error(probs, torch.zeros(3, dtype=torch.long)) == pytest.approx(0.0)


def test_auroc_and_ap_hand_case():
    s, y = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])
    assert auroc(s, y) == pytest.approx(0.75)
    assert average_precision(s, y) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_ranking_metrics_with_ties_and_missing_classes():
    s, y = torch.tensor([0.5, 0.5, 0.2, 0.8]), torch.tensor([1, 0, 0, 1])
    assert auroc(s, y) == pytest.approx(3.5 / 4)  # the tied pair counts one half
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # one threshold for the tied pair
    assert math.isnan(auroc(s, torch.ones(4))) and math.isnan(average_precision(s, torch.zeros(4)))
    with pytest.raises(ValueError, match="differ in length"):
        auroc(s, y[:3])
    # mAP: the mean over labels that have a positive; a label without one is left out
    t = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]).float()
    sc = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.3, 0.2], [0.1, 0.8, 0.1], [0.3, 0.2, 0.4]])
    ap0, ap1 = (1 + 2 / 4) / 2, 1 / 2  # label 0: positives ranked 1st and 4th; label 1: 2nd
    assert mean_average_precision(sc, t) == pytest.approx((ap0 + ap1) / 2)
    assert mean_average_precision(sc, t) == pytest.approx(
        average_precision_score(t[:, :2].numpy(), sc[:, :2].numpy(), average="macro"))


def test_ood_scores_match_sklearn_and_extremes():
    g = torch.Generator().manual_seed(0)
    s_in, s_out = torch.rand(200, generator=g) * 0.5 + 0.5, torch.rand(150, generator=g) * 0.7 + 0.1
    m = ood_scores(s_in, s_out)
    y = torch.cat([torch.ones(200), torch.zeros(150)]).numpy()
    s = torch.cat([s_in, s_out]).numpy()
    assert m["auroc"] == pytest.approx(100 * roc_auc_score(y, s))
    assert m["aupr_in"] == pytest.approx(100 * average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(100 * average_precision_score(1 - y, -s))
    perfect = ood_scores(torch.tensor([0.9, 0.8]), torch.tensor([0.2, 0.1, 0.3]))
    assert perfect == {"auroc": 100.0, "aupr_in": 100.0, "aupr_out": 100.0}


def test_alignment_uniformity_hand_cases():
    z = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # normalised: e1, e2
    z_pos = torch.tensor([[2.0, 0.0], [5.0, 0.0]])  # e1, e1: distances^2 0 and 2
    assert alignment(z, z_pos) == pytest.approx(1.0)
    assert uniformity(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(-8.0)  # one pair, |d|^2 = 4
    tri = torch.tensor([[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)])
    assert uniformity(tri) == pytest.approx(-6.0)  # three pairs, |d|^2 = 3 each


# ------------------------------------------------------------------------------------------------ open set
def test_openset_hand_case():
    probs = torch.tensor([[.9, .1], [.6, .4], [.7, .3]])  # seen classes 3 and 7; the third image is class 5
    labels = torch.tensor([3, 7, 5])
    c = openset_curves(probs, labels, (3, 7), torch.tensor([0.0, 0.65, 0.8, 1.0]))
    assert c["acc_a"] == pytest.approx([100 / 3, 100 / 3, 200 / 3, 100 / 3])
    assert c["acc_b"] == pytest.approx([200 / 3, 100 / 3, 200 / 3, 100 / 3])


def test_openset_curves_monotone_where_they_must_be():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=g), 1)
    labels = torch.randint(0, 8, (500,), generator=g)
    c = openset_curves(probs, labels, (0, 1, 2, 3))
    known, unknown = torch.tensor(c["known_acc_a"]), torch.tensor(c["unknown_acc"])
    assert bool((known[1:] <= known[:-1] + 1e-9).all()), "seen images accepted correctly can only decrease"
    assert bool((unknown[1:] >= unknown[:-1] - 1e-9).all()), "unseen images rejected can only increase"
    assert unknown[0] == 0 and unknown[-1] == 100 and known[-1] == 0
    assert 0 <= c["auc_a"] <= 100 and 0 <= c["auc_b"] <= 100


# -------------------------------------------------------------------------------------------------- noise
def test_salt_and_pepper_is_nested_and_of_the_right_size():
    x = torch.full((20, 3, 16, 16), 0.5)
    masks = []
    for p in (0.0, 0.1, 0.2, 0.3):
        noisy = salt_and_pepper(x, p, torch.Generator().manual_seed(7))
        assert torch.equal(x, torch.full_like(x, 0.5)), "input modified"
        changed = (noisy != 0.5).all(1)  # all channels together
        assert bool(((noisy == 0) | (noisy == 1) | (noisy == 0.5)).all())
        assert abs(changed.float().mean().item() - p) < 0.02
        masks.append(changed)
    for lo, hi in zip(masks, masks[1:]):
        assert bool((lo <= hi).all()), "corrupted pixels at a lower level must stay corrupted at a higher one"


def test_noise_curve_drop_is_relative_to_clean():
    from mixlab.data.augment import BatchAugment

    class Bright(torch.nn.Module):  # class 1 iff mean pixel > 0.5: noise pulls bright images down
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([0.5 - m, m - 0.5], 1)

    # mean pixel 135/255 = 0.53: salt and pepper (half each) pull the mean towards 0.5 and some images below it
    x = torch.full((200, 1, 8, 8), 135, dtype=torch.uint8)
    c = noise_curve(Bright(), x, torch.ones(200, dtype=torch.long), BatchAugment((0.0,), (1.0,)), (0.1, 0.3))
    assert c["levels"] == pytest.approx([0, 10, 30]) and c["accuracy"][0] == 100 and c["relative_drop"][0] == 0
    acc = c["accuracy"]
    assert all(hi >= lo for hi, lo in zip(acc, acc[1:])) and acc[-1] < acc[0], "noise must pull accuracy down"
    assert c["relative_drop"] == pytest.approx([100 * (acc[0] - a) / acc[0] for a in acc])


# ----------------------------------------------------------------------------------------------- multi-label
def test_every_input_mixer_accepts_multi_hot_targets():
    from mixlab.methods.base import InputMixer, interpolate

    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 9, 15, generator=g)
    t = (torch.rand(12, 5, generator=g) < 0.4).float()
    checked = 0
    for name in mixlab.list_methods():
        try:
            m = mixlab.create(name, num_classes=5)
        except TypeError:
            continue
        if not isinstance(m, InputMixer) or name == "transformmix":  # transformmix mixes only once searched
            continue
        x_mix, t_mix = m(x, t)
        assert x_mix.shape == x.shape and t_mix.shape == t.shape, name
        if name.startswith("opttransmix"):  # called directly: barycenters with the hard label of the heavier image (Zhu et al. 2020, section 2.2)
            heavier = (m.last.lam >= 0.5).reshape(-1, 1)
            torch.testing.assert_close(t_mix, torch.where(heavier, t, t[m.last.index]), msg=name)
        elif m.last is not None:
            torch.testing.assert_close(t_mix, interpolate(t, t[m.last.index], m.last.lam), msg=name)
        else:
            torch.testing.assert_close(t_mix, t)
        checked += 1
    assert checked >= 4


def test_miml_loader_and_multilabel_training(data_root, tmp_path):
    from mixlab.data import load_dataset
    from mixlab.eval import run_eval
    from mixlab.train import TrainConfig, make_trainer

    tr, te = load_dataset("miml", "train", data_root), load_dataset("miml", "test", data_root)
    assert tr.x.shape == (1000, 1, 9, 15) and te.x.shape == (1000, 1, 9, 15)
    assert (tr.y.sum(0) + te.y.sum(0)).tolist() == [409, 458, 580, 465, 560]  # published label counts
    assert tr.x.mean((0, 1, 2)).abs().max() < 1e-4
    cfg = TrainConfig(dataset="miml", model="bagnet", method="manifold", epochs=2, batch_size=100, lr=0.05,
                      model_kwargs={"width": 32})
    trainer = make_trainer(cfg, out=tmp_path, data_dir=str(data_root), progress=False)
    result = trainer.run()
    assert trainer.loss_fn is mixlab.multilabel_bce
    assert 20 < result["test_map"] <= 100 and result["test_error"] == pytest.approx(100 - result["test_map"])
    ev = run_eval(tmp_path, result["run_id"], "multilabel", data_dir=str(data_root))
    assert ev["map"] == pytest.approx(result["test_map"])


# ------------------------------------------------------------------------------------------- runs and evals
TINY = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.125, "fc_dim": 128}, epochs=1, batch_size=64,
            lr=0.05)


def _digits_config(**kw):
    from mixlab.train import TrainConfig

    return TrainConfig(**{**TINY, "subset_per_class": 40, **kw})


def test_load_run_restores_the_trained_model_and_evals_are_stored(tmp_path):
    from mixlab.eval import load_run, run_eval
    from mixlab.results import ResultsStore
    from mixlab.train import make_trainer

    result = make_trainer(_digits_config(crop_padding=1), out=tmp_path, progress=False).run()
    ev = run_eval(tmp_path, result["run_id"], "accuracy")
    assert ev["top1_error"] == pytest.approx(result["test_error"])
    cal = run_eval(tmp_path, result["run_id"], "calibration", n_bins=10)
    assert 0 <= cal["ece"] <= 100 and (tmp_path / "runs" / result["run_id"] / "eval" / "calibration.png").exists()
    au = run_eval(tmp_path, result["run_id"], "align-uniform", limit=200)
    assert 0 <= au["alignment"] <= 4 and -4 <= au["uniformity"] <= 0
    assert {e["kind"] for e in ResultsStore(tmp_path).evals(result["run_id"])} == {"accuracy", "calibration",
                                                                                   "align-uniform"}
    trainer = load_run(tmp_path, result["run_id"])
    assert not trainer.model.training
    # a stored evaluation is returned as is (resumable sweeps); force recomputes
    assert run_eval(tmp_path, result["run_id"], "accuracy")["eval_seconds"] == ev["eval_seconds"]


def test_train_classes_relabels_and_openset_eval(tmp_path):
    from mixlab.eval import run_eval
    from mixlab.train import TrainConfig, make_trainer

    assert "train_classes" not in TrainConfig().identity(), "unused field must not change earlier run ids"
    cfg = _digits_config(train_classes=(7, 2, 4))
    trainer = make_trainer(cfg, out=tmp_path, progress=False)
    result = trainer.run()
    assert trainer.num_classes == 3 and trainer.train_data.classes == ["7", "2", "4"]
    assert set(trainer.y_train.tolist()) == {0, 1, 2} and set(trainer.y_test.tolist()) == {0, 1, 2}
    ev = run_eval(tmp_path, result["run_id"], "openset")
    assert ev["n_seen_images"] == len(trainer.y_test) and ev["n_unseen_images"] == 500 - len(trainer.y_test)
    assert TrainConfig.from_identity(cfg.identity()).run_id() == cfg.run_id()


# --------------------------------------------------------------------------------------------- reproduction
def test_paper_numbers_cover_the_reproductions():
    from mixlab.reproduce import REPRODUCTIONS, paper_cell, paper_numbers

    numbers = paper_numbers()
    for table in numbers["tables"].values():
        assert table["paper"] in numbers["papers"] and table["table"] and table["rows"]
    t4 = REPRODUCTIONS["automix-table4"].tables[0]
    assert all(paper_cell(numbers, t4, r, c) for r in t4.rows for c in t4.columns)
    assert paper_cell(numbers, t4, t4.rows[0], t4.columns[1]) == (10.83, 0.61)  # Baseline, MNIST(sub)
    for rep in REPRODUCTIONS.values():
        for t in rep.tables:
            if t.paper_key:
                assert t.paper_key in numbers["tables"]
                assert sum(paper_cell(numbers, t, r, c) is not None for r in t.rows for c in t.columns) > 0, t.title


def test_killed_sweep_resumes_without_rerunning_finished_runs(tmp_path, monkeypatch):
    from mixlab import reproduce
    from mixlab.protocols import PROTOCOLS, Protocol
    from mixlab.results import ResultsStore
    from mixlab.train.engine import Trainer

    monkeypatch.setitem(PROTOCOLS, "test-tiny", Protocol(
        "test-tiny", "digits, 1 epoch", dict(TINY, subset_per_class=10, test_limit=100), ("erm", "mixup"), trials=2))
    rep = reproduce.Reproduction("test-tiny", "tiny", (reproduce.Table(
        "t", reproduce.rows([("Baseline", "erm"), ("Mixup", "mixup"), ("Missing", "no-such-method")]),
        (reproduce.Column("digits", "test-tiny", "test-tiny"), reproduce.Column("absent", "no-such-protocol", "no-such-protocol"),
         reproduce.Column("OOD", "test-tiny", "test-tiny", value="eval:accuracy:top1_error"))),),)
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-tiny", rep)
    calls = []
    original = Trainer.run

    def counting_run(self, resume=False):
        calls.append(self.run_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during the third run
        return original(self, resume)

    monkeypatch.setattr(Trainer, "run", counting_run)
    with pytest.raises(KeyboardInterrupt):
        reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lambda *a: None)
    finished = {r["run_id"]: r["created"] for r in ResultsStore(tmp_path).runs()}
    assert len(finished) == 2
    calls.clear()  # --report-only: a report from the two finished runs, nothing trained
    partial = reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lambda *a: None, train=False)
    assert calls == [] and "**2 not trained**" in partial.read_text()
    calls.clear()
    path = reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lambda *a: None)
    assert len(calls) == 2 and not set(calls) & set(finished), "finished runs were trained again"
    assert {r["run_id"]: r["created"] for r in ResultsStore(tmp_path).runs() if r["run_id"] in finished} == finished
    calls.clear()
    reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lambda *a: None)
    assert calls == []
    text = path.read_text()
    assert "method `no-such-method` not available in this build" in text
    assert "protocol `no-such-protocol` not available in this build" in text
    assert text.count("(n=2)") == 4  # 2 methods x 2 columns with numbers
    assert (path.parent / "table1-bars.png").exists()


def test_reproduction_skips_a_run_another_process_is_training(tmp_path, monkeypatch):
    from mixlab import reproduce
    from mixlab.protocols import PROTOCOLS, Protocol
    from mixlab.locks import run_lock

    monkeypatch.setitem(PROTOCOLS, "test-tiny", Protocol(
        "test-tiny", "digits, 1 epoch", dict(TINY, subset_per_class=10, test_limit=100), ("erm", "mixup"), trials=1))
    rep = reproduce.Reproduction("test-tiny", "tiny", (reproduce.Table(
        "t", reproduce.rows([("Baseline", "erm"), ("Mixup", "mixup")]),
        (reproduce.Column("digits", "test-tiny", "test-tiny"),)),))
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-tiny", rep)
    config = PROTOCOLS["test-tiny"].train_config("mixup", 0)
    lines = []
    with run_lock(tmp_path / "runs" / config.run_id()):  # "another process" is training mixup seed 0
        path = reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lines.append)
    assert any("mixup seed 0: skipped" in line for line in lines)
    text = path.read_text()
    assert "1 trained now" in text and "**1 skipped**" in text and text.count("(n=1)") == 1
    lines.clear()
    path = reproduce.run_reproduction("test-tiny", out=tmp_path, quick=True, log=lines.append)  # lock released
    assert "1 trained now" in path.read_text() and path.read_text().count("(n=1)") == 2


def test_reproduction_report_names_the_method_options_of_each_row(tmp_path, monkeypatch):
    from mixlab import reproduce
    from mixlab.protocols import PROTOCOLS, Protocol

    tiny = dict(TINY, subset_per_class=10, test_limit=100)
    monkeypatch.setitem(PROTOCOLS, "test-opts", Protocol("test-opts", "digits, 1 epoch", tiny, ("mixup",), trials=1,
                                                         method_kwargs={"mixup": {"alpha": 0.4}}))
    monkeypatch.setitem(PROTOCOLS, "test-plain", Protocol("test-plain", "digits, 1 epoch", tiny, ("mixup",), trials=1))
    rep = reproduce.Reproduction("test-opts", "tiny", (reproduce.Table(
        "t", (reproduce.Row("Mixup", "mixup"), reproduce.Row("Mixup per sample", "mixup", {"per_sample": True})),
        (reproduce.Column("a", "test-opts", "test-opts"),)), reproduce.Table(
        "u", (reproduce.Row("Mixup", "mixup"),),
        (reproduce.Column("a", "test-opts", "test-opts"), reproduce.Column("b", "test-plain", "test-plain"))),),)
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-opts", rep)
    path = reproduce.run_reproduction("test-opts", out=tmp_path, quick=True, log=lambda *a: None)
    text = path.read_text()
    assert "| Mixup (`mixup` alpha=0.4) |" in text  # the protocol's option, which the row does not name
    assert "| Mixup per sample (`mixup` alpha=0.4, per_sample=true) |" in text
    # columns that train with different options: each cell says which
    assert "method options: alpha=0.4" in text and "method options: none" in text
    assert "method options of this protocol: `mixup`: alpha=0.4" in text
    cells = json.loads((path.parent / "results.json").read_text())["tables"][1]["rows"][0]["cells"]
    assert [c["method_options"] for c in cells] == [{"alpha": 0.4}, {}]


def test_quick_image_protocols_score_the_whole_test_set():
    # the first 2,000 MNIST test images are 1.35 to 2.4 points harder than all 10,000: a subset is not comparable
    from mixlab.protocols import PROTOCOLS

    quick = [p for name, p in PROTOCOLS.items() if name.endswith("-quick")]
    assert len(quick) > 5
    assert [p.name for p in quick if p.config.get("test_limit")] == []


def test_image_table_title_clears_the_column_headings(tmp_path, monkeypatch):
    """The suptitle of a tall grid (e.g. generator-vs-barycenter's 12 rows) must not overlap the column headings."""
    import matplotlib.pyplot as plt
    import mixlab.viz as viz
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: None)  # keep the saved figure open to measure it
    columns = [(f"lam={j}", torch.rand(12, 1, 28, 28, generator=torch.Generator().manual_seed(j))) for j in range(7)]
    viz.image_table(columns, tmp_path / "grid.png", row_labels=[f"row {i}" for i in range(12)],
                    title="a title as long as the evaluation's, over the middle of the headings")
    fig = plt.figure(plt.get_fignums()[-1])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    headings = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    assert len(headings) == 7
    assert all(title.y0 >= h.y1 - 0.5 for h in headings), (title, headings)
    close(fig)
