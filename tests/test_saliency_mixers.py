"""PuzzleMix and Co-Mixup: the graph cuts against brute force, the masks against the labels, the authors' steps."""
import itertools
import json

import pytest
import torch

import mixlab
from mixlab.cli import main
from mixlab.methods.comixup import CoMixup, objective, resolve_sets
from mixlab.methods.puzzlemix import PuzzleMix, move_cells, transport_plan
from mixlab.methods.saliency import input_saliency
from mixlab.ot import graphcut

BACKENDS = ["native", "scipy"] if graphcut.status() == "compiled" else ["scipy"]


def random_problem(g, h, w, n_labels, seed, high=60, wmax=25):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, high, (g, h, w, n_labels), generator=gen),
            torch.randint(0, wmax, (g, h - 1, w), generator=gen), torch.randint(0, wmax, (g, h, w - 1), generator=gen))


def brute_force(unary, wv, wh, label_cost=None):
    """Minimum energy over every labelling of each (tiny) grid."""
    g, h, w, n_labels = unary.shape
    every = torch.tensor(list(itertools.product(range(n_labels), repeat=h * w)))  # (k, V)
    unary_part = unary.reshape(g, h * w, n_labels)[:, torch.arange(h * w), every].sum(-1)  # (g, k)
    p, q = graphcut.grid_edges(h, w)
    a, b = every[:, p], every[:, q]
    pair = (a - b) ** 2 if label_cost is None else label_cost[a, b]  # (k, E)
    weights = torch.cat([wv.reshape(g, -1), wh.reshape(g, -1)], 1)
    return (unary_part + weights @ pair.T).min(1).values


def assert_deterministic(mix):
    """``mix(seed)`` gives the same tensors for the same seed and others for another seed."""
    a, b, c = mix(3), mix(3), mix(4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


# ------------------------------------------------------------------------------------------------ graph cuts
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_labels,shape", [(2, (3, 3)), (3, (3, 3)), (3, (2, 4)), (4, (2, 3)), (2, (1, 6))])
def test_convex_cut_is_exact_against_brute_force(backend, n_labels, shape):
    unary, wv, wh = random_problem(12, *shape, n_labels, seed=n_labels * 10 + shape[1])
    labels = graphcut.solve_convex(unary, wv, wh, backend=backend)
    assert labels.shape == (12, *shape) and labels.dtype == torch.long
    assert torch.equal(graphcut.energy(labels, unary, wv, wh), brute_force(unary, wv, wh))


def test_convex_cut_breaks_ties_the_same_way_in_both_backends():
    if len(BACKENDS) < 2:
        pytest.skip(f"needs the compiled kernel ({graphcut.status()})")
    unary, wv, wh = random_problem(40, 4, 5, 3, seed=3, high=4, wmax=3)  # small integers: many ties
    assert torch.equal(graphcut.solve_convex(unary, wv, wh, backend="native"),
                       graphcut.solve_convex(unary, wv, wh, backend="scipy"))


def test_convex_cut_needs_integer_costs_and_non_negative_weights():
    unary, wv, wh = random_problem(2, 3, 3, 2, seed=0)
    with pytest.raises(TypeError, match="integer"):
        graphcut.solve_convex(unary.float(), wv, wh)
    with pytest.raises(ValueError, match=">= 0"):
        graphcut.solve_convex(unary, -wv, wh)
    with pytest.raises(ValueError, match="wv"):
        graphcut.solve_convex(unary, wh, wv)


POTTS_HALF = torch.tensor([[0, 4, 4, 1], [4, 0, 4, 1], [4, 4, 0, 4], [1, 1, 4, 0]])  # label 3 = half of 0 and 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_swap_moves_reach_a_local_minimum_no_swap_move_improves(backend):
    unary, wv, wh = random_problem(6, 3, 3, 4, seed=7)
    init = torch.zeros(6, 3, 3, dtype=torch.long)
    labels = graphcut.solve_swap(unary, POTTS_HALF, wv, wh, init, backend=backend)
    found = graphcut.energy(labels, unary, wv, wh, POTTS_HALF)
    assert (found <= graphcut.energy(init, unary, wv, wh, POTTS_HALF)).all()
    assert (found >= brute_force(unary, wv, wh, POTTS_HALF)).all()
    for b in range(6):  # every relabelling of the nodes labelled a or b between a and b is no better
        lab = labels[b].flatten()
        for la, lb in itertools.combinations(range(4), 2):
            nodes = ((lab == la) | (lab == lb)).nonzero().flatten()
            picks = torch.tensor(list(itertools.product((la, lb), repeat=len(nodes))), dtype=torch.long)
            cand = lab.expand(len(picks), -1).clone()
            cand[:, nodes] = picks.reshape(len(picks), -1)
            k = len(cand)
            e = graphcut.energy(cand.reshape(k, 3, 3), unary[b:b + 1].expand(k, -1, -1, -1),
                                wv[b:b + 1].expand(k, -1, -1), wh[b:b + 1].expand(k, -1, -1), POTTS_HALF)
            assert (e >= found[b]).all()


def test_swap_compiled_equals_the_python_reference():
    if len(BACKENDS) < 2:
        pytest.skip(f"needs the compiled kernel ({graphcut.status()})")
    unary, wv, wh = random_problem(8, 4, 4, 4, seed=11)
    init = torch.randint(0, 4, (8, 4, 4), generator=torch.Generator().manual_seed(1))
    assert torch.equal(graphcut.solve_swap(unary, POTTS_HALF, wv, wh, init, backend="native"),
                       graphcut.solve_swap(unary, POTTS_HALF, wv, wh, init, backend="scipy"))


def test_swap_refuses_label_costs_that_are_not_a_semi_metric():
    unary, wv, wh = random_problem(1, 2, 2, 2, seed=0)
    init = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="symmetric"):
        graphcut.solve_swap(unary, torch.tensor([[0, 1], [2, 0]]), wv, wh, init)
    with pytest.raises(ValueError, match="symmetric"):
        graphcut.solve_swap(unary, torch.tensor([[1, 1], [1, 0]]), wv, wh, init)


# ------------------------------------------------------------------------------------------------ PuzzleMix
def authors_transport(mask, grad_pool, eps):
    """``mask_transport`` of the PuzzleMix code, step by step with dense one-hot products."""
    b, g = mask.shape[0], mask.shape[-1]
    n = g * g
    coords = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1).reshape(n, 2)
    cost_c = (coords[:, None] - coords[None]).pow(2).sum(-1).float() / max(g - 1, 1) ** 2
    cost = eps * cost_c - grad_pool.reshape(b, n, 1) * (mask > 0).float().reshape(b, 1, n)
    for _ in range(g):
        plan = torch.zeros_like(cost).scatter_(-1, cost.min(-1)[1].unsqueeze(-1), 1)
        col_best = (plan * cost).min(-2)[1]
        win = torch.zeros_like(cost).scatter_(-2, col_best.unsqueeze(-2), 1) * plan
        cost += (1 - win) * plan
    return win


@pytest.mark.parametrize("g", [2, 3, 4, 8])
def test_transport_plan_is_the_authors_iteration(g):
    gen = torch.Generator().manual_seed(g)
    mask = torch.randint(0, 3, (16, g, g), generator=gen).float() / 2
    sal = torch.rand(16, g, g, generator=gen)
    sal[::2] = (sal[::2] * 3).round()  # ties
    sal[1::4] = 1.0  # uniform saliency: ties everywhere
    sal = sal / sal.sum((1, 2), keepdim=True)
    plan = transport_plan(mask, sal, 0.8)
    assert torch.equal(plan, authors_transport(mask, sal, 0.8))
    assert (plan.sum(-1) <= 1).all() and (plan.sum(-2) <= 1).all()  # each cell moves at most once, no collisions


def square_batch():
    """Two images with one bright square each, and saliency on the square only."""
    x = torch.zeros(2, 1, 16, 16)
    x[0] += 0.2
    x[1] += 0.6
    x[0, :, 2:6, 2:6] = 1.0
    x[1, :, 10:14, 8:12] = 0.9
    sal = torch.zeros(2, 16, 16)
    sal[0, 2:6, 2:6] = 1.0
    sal[1, 10:14, 8:12] = 1.0
    return x, torch.tensor([0, 1]), sal


@pytest.mark.parametrize("seed", range(6))
def test_puzzlemix_keeps_the_salient_square_whole(seed):
    x, y, sal = square_batch()
    m = PuzzleMix(num_classes=2, seed=seed)
    x_mix, _ = m(x, y, sal)
    perm = m.last.index
    for i in range(2):  # an output shows its own square and its partner's, each fully and unblended
        for j in {i, int(perm[i])}:
            value = 1.0 if j == 0 else 0.9
            assert int((x_mix[i] == value).sum()) == 16, (seed, i, j)


def test_puzzlemix_label_weight_is_the_mask_area_per_sample():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 16, 16, generator=gen)
    sal = torch.rand(16, 16, 16, generator=gen) ** 4
    y = torch.randint(0, 5, (16,), generator=gen)
    t = torch.nn.functional.one_hot(y, 5).float()
    for transport in (False, True):
        m = PuzzleMix(num_classes=5, seed=1, transport=transport, block_nums=(2, 4, 8))
        for _ in range(3):
            x_mix, t_mix = m(x, y, sal)
            mask, perm = m.last_mask, m.last.index
            ratio = mask.mean((1, 2, 3))
            torch.testing.assert_close(m.last.lam, ratio)
            torch.testing.assert_close(t_mix, ratio[:, None] * t + (1 - ratio[:, None]) * t[perm])
            torch.testing.assert_close(t_mix.sum(1), torch.ones(16))
            assert set(mask.unique().tolist()) <= {0.0, 0.5, 1.0}
            if not transport:
                torch.testing.assert_close(x_mix, mask * x + (1 - mask) * x[perm])


def test_puzzlemix_mask_minimises_its_energy_on_a_tiny_grid():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 8, 8, generator=gen)
    sal = torch.rand(6, 8, 8, generator=gen) ** 3
    m = PuzzleMix(num_classes=3, seed=0)
    perm = torch.randperm(6, generator=gen)
    for n in (2, 4):
        if n == 4:
            m.n_labels = 2  # 2^16 labellings
        unary, wv, wh, _ = m.mask_costs(x, sal, perm, 0.35, n)
        mask, _ = m.masks(x, sal, perm, 0.35, n)
        labels = ((1 - mask) * (m.n_labels - 1)).round().long()
        assert torch.equal(graphcut.energy(labels, unary, wv, wh), brute_force(unary, wv, wh))


def test_transport_moves_whole_cells_of_the_image():
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(5, 2, 12, 12, generator=gen)
    mask = torch.randint(0, 2, (5, 3, 3), generator=gen).float()
    plan = transport_plan(mask, torch.rand(5, 3, 3, generator=gen), 0.8)
    moved = move_cells(x, plan, 3)
    cells = x.reshape(5, 2, 3, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(5, 9, -1)
    out = moved.reshape(5, 2, 3, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(5, 9, -1)
    src = plan.argmax(1)  # the cell that lands on each destination
    for b in range(5):
        for j in range(9):
            expected = cells[b, src[b, j]] if plan[b, :, j].any() else torch.zeros_like(cells[b, j])
            assert torch.equal(out[b, j], expected)


def test_puzzlemix_is_deterministic_and_leaves_inputs_alone():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(8, 3, 16, 16, generator=gen)
    y = torch.randint(0, 4, (8,), generator=gen)
    sal = torch.rand(8, 16, 16, generator=gen)
    copies = (x.clone(), y.clone(), sal.clone())
    assert_deterministic(lambda seed: PuzzleMix(num_classes=4, seed=seed)(x, y, sal))
    assert all(torch.equal(u, v) for u, v in zip((x, y, sal), copies))
    model = mixlab.create_model("cnn11", num_classes=4, in_channels=3, image_size=16, width=0.25)
    model.train()
    loss = PuzzleMix(num_classes=4, seed=3).training_loss(model, x, y)
    assert torch.isfinite(loss) and loss.requires_grad and model.training
    assert torch.equal(x, copies[0])


def test_puzzlemix_rejects_bad_inputs():
    m = PuzzleMix(num_classes=3)
    x, y = torch.rand(4, 1, 12, 12), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="saliency must be"):
        m(x, y, torch.rand(4, 12, 11))
    with pytest.raises(ValueError, match="divides"):
        PuzzleMix(num_classes=3, block_nums=(5,))(x, y, torch.rand(4, 12, 12))
    with pytest.raises(ValueError, match="images"):
        m(torch.rand(4, 12), y, torch.rand(4, 12, 12))
    with pytest.raises(ValueError, match="n_labels"):
        PuzzleMix(n_labels=1)


# ------------------------------------------------------------------------------------------------ Co-Mixup
def salient_squares(b=12, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, size, size, generator=gen)
    sal = torch.rand(b, size, size, generator=gen) * 0.05
    for i in range(b):
        r, c = torch.randint(0, size - 4, (2,), generator=gen).tolist()
        sal[i, r:r + 4, c:c + 4] += 1.0
    return x, torch.randint(0, 5, (b,), generator=gen), sal


def test_comixup_masks_sum_to_one_and_give_the_label_weights():
    x, y, sal = salient_squares(b=14)
    t = torch.nn.functional.one_hot(y, 5).float()
    m = CoMixup(num_classes=5, seed=0, m_part=6)  # partitions of 6, 6 and 2
    x_mix, t_mix = m(x, y, sal)
    w = m.last_labels  # (out, n, n, in)
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1], dtype=w.dtype))
    area = w.mean((1, 2))
    torch.testing.assert_close(m.last_masks, area)
    torch.testing.assert_close(t_mix, area.float() @ t)
    torch.testing.assert_close(t_mix.sum(1), torch.ones(14))
    block = torch.block_diag(*[torch.ones(k, k) for k in (6, 6, 2)]).bool()
    assert (area[~block] == 0).all()  # inputs mix only within their partition
    masks = torch.nn.functional.interpolate(w.permute(0, 3, 1, 2).float(), size=(16, 16), mode="nearest")
    torch.testing.assert_close(x_mix, torch.einsum("ojhw,jchw->ochw", masks, x))
    assert set(w.unique().tolist()) <= {0.0, 0.5, 1.0}
    assert (area > 0).sum(1).float().mean() > 1.5  # outputs really mix several inputs


def test_comixup_without_smoothness_prior_or_diversity_takes_the_most_salient_input_per_block():
    x, y, sal = salient_squares(b=8)
    m = CoMixup(num_classes=5, seed=0, beta=0.0, eta=0.0, thres=1e9, set_resolve=False, niter=1, m_part=8)
    m(x, y, sal)
    pooled = torch.nn.functional.avg_pool2d(sal[:, None], 4)[:, 0]
    pooled = pooled / pooled.sum((1, 2), keepdim=True)
    best = pooled.argmax(0)  # (n, n): the input with the most saliency in each block
    chosen = m.last_labels.argmax(-1)  # (out, n, n)
    assert torch.equal(chosen, best.expand_as(chosen))


def test_comixup_lowers_its_objective_from_the_random_start():
    x, y, sal = salient_squares(b=10)
    m = CoMixup(num_classes=5, seed=2, m_part=10)
    n = 4
    pooled = torch.nn.functional.avg_pool2d(sal[:, None], 4)[:, 0]
    cost = -(pooled / pooled.sum((1, 2), keepdim=True))[None].double()
    a = torch.eye(10)[None]
    start = torch.nn.functional.one_hot(torch.randint(10, (1, 10, n, n), generator=torch.Generator().manual_seed(0)),
                                        10).double()
    final = m.labellings(cost, a)
    beta, gamma = m.beta / n ** 2, m.gamma / n ** 2
    assert objective(cost, final, beta, gamma) < objective(cost, start, beta, gamma)


def test_resolve_sets_marks_outputs_with_the_same_inputs():
    onehot = torch.zeros(1, 3, 2, 2, 4, dtype=torch.float64)
    onehot[0, 0, 0, :, 1] = onehot[0, 0, 1, :, 3] = 1  # output 0 uses inputs 1 and 3
    onehot[0, 1, :, 0, 3] = onehot[0, 1, :, 1, 1] = 1  # output 1 too
    onehot[0, 2, ..., 2] = 1  # output 2 uses input 2 only
    add = resolve_sets(onehot)[0]
    expected = torch.zeros(3, 4, dtype=torch.float64)
    expected[0, 1] = expected[1, 3] = 1
    assert torch.equal(add, expected)


def test_comixup_is_deterministic_and_leaves_inputs_alone():
    x, y, sal = salient_squares(b=8, seed=3)
    copies = (x.clone(), y.clone(), sal.clone())
    assert_deterministic(lambda seed: CoMixup(num_classes=5, seed=seed)(x, y, sal))
    assert all(torch.equal(u, v) for u, v in zip((x, y, sal), copies))


def test_comixup_training_loss_adds_the_clean_loss():
    x, y, _ = salient_squares(b=6, seed=4)
    t = torch.nn.functional.one_hot(y, 5).float()
    model = mixlab.create_model("cnn11", num_classes=5, in_channels=3, image_size=16, width=0.25, dropout=0.0)
    model.train()
    loss = CoMixup(num_classes=5, seed=0).training_loss(model, x, y)
    assert loss.requires_grad and model.training
    # by hand: train-mode saliency of the clean loss, the same draws, mixed loss + 2 clean_lam x clean loss
    saliency, clean = input_saliency(model, x, t, mixlab.soft_cross_entropy, eval_mode=False, keep_loss=True)
    x_mix, t_mix = CoMixup(num_classes=5, seed=0).mix_with_saliency(x, t, saliency)
    expected = mixlab.soft_cross_entropy(model(x_mix), t_mix) + 2 * clean
    torch.testing.assert_close(loss.detach(), expected.detach())


# ------------------------------------------------------------------------------------------------ engine, CLI
@pytest.mark.parametrize("method", ["puzzlemix", "comixup"])
def test_train_one_epoch_on_digits(tmp_path, capsys, method):
    args = ["train", "--dataset", "digits", "--model", "cnn11", "--model-arg", "width=0.25", "--method", method,
            "--epochs", "1", "--subset-per-class", "20", "--out", str(tmp_path), "--json", "--no-progress",
            "--threads", "1"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == method and 0 <= result["test_error"] <= 100


@pytest.mark.parametrize("model", ["preactresnet18", "resnet18", "wrn28-10"])
def test_puzzlemix_and_comixup_step_with_every_image_model(model):
    kwargs = {"depth": 10, "widen": 1} if model == "wrn28-10" else {"width": 8}
    net = mixlab.create_model(model, num_classes=3, in_channels=1, image_size=8, **kwargs)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    for name in ("puzzlemix", "comixup"):
        loss = mixlab.create(name, num_classes=3, seed=0).training_loss(net, x, y)
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("method", ["puzzlemix", "comixup"])
def test_show_writes_png(tmp_path, method):
    path = tmp_path / f"{method}.png"
    assert main(["show", "--method", method, "--dataset", "digits", "--pairs", "4", "--out", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
