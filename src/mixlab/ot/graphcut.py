"""Minimum-energy labellings of 4-connected grids, batched: the graph cuts behind PuzzleMix's and Co-Mixup's masks.

Problem ``g`` of a batch has an ``h x w`` grid of nodes ``p``, labels ``0..L-1`` and the integer energy

    E(l) = sum_p U[g, p, l_p] + sum_{grid edges pq} w[g, pq] V(l_p, l_q)

with unary costs ``U`` ``(G, h, w, L)``, edge weights ``wv`` ``(G, h-1, w)`` (between rows) and ``wh`` ``(G, h, w-1)``
(between columns), all ``>= 0`` for the weights, and label costs ``V >= 0`` with ``V(a, a) = 0``.

* :func:`solve_convex`: ``V(a, b) = (a - b)^2`` (PuzzleMix's ordered mask values). **Exact**, by one minimum cut of
  Ishikawa's graph (Ishikawa, *Exact optimization for Markov random fields with convex priors*, TPAMI 2003); for
  ``L = 2`` the plain binary cut. The authors' pyGCO call runs alpha-beta swap moves on this energy, which stop at a
  local minimum: the labelling here has an energy at most theirs.
* :func:`solve_swap`: any symmetric semi-metric ``V`` (Co-Mixup's Potts costs with half-half labels), by alpha-beta
  swap moves (Boykov, Veksler, Zabih, *Fast approximate energy minimization via graph cuts*, TPAMI 2001) as gco's
  ``swap``: a local minimum with respect to every swap move.

Costs are integers (as in pyGCO, which takes int32): the callers scale and truncate their float costs, so "exact"
means exact for those integers. Ties are broken the same way everywhere: each cut is the smallest minimum cut (the
nodes reachable from the source after a maximum flow), which does not depend on the max-flow algorithm.

Backends: a C kernel (``_graphcut.c``: Dinic's maximum flow; compiled on first use like the barycenter kernel, see
:mod:`mixlab.ot.native`), else scipy's ``maximum_flow`` with the same graphs (same labels; ``solve_swap`` is then
slow, one scipy call per move). Cuts are sequential augmenting-path work on the CPU, as in the authors' code: GPU
tensors are copied to the CPU and the labels copied back. :func:`energy` evaluates ``E`` in PyTorch (any device).
"""
from __future__ import annotations

import ctypes
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import native

SOURCE = Path(__file__).with_name("_graphcut.c")
_LIMIT = 1 << 60  # energies and capacities stay far from int64 overflow
_lock = threading.Lock()
_state: dict = {}


def _load():
    with _lock:
        if not _state:
            if native.disabled():
                _state["reason"] = "disabled by MIXLAB_NATIVE=0"
            else:
                try:
                    lib = ctypes.CDLL(str(native._build(SOURCE, "graphcut")))
                    i64, ptr = ctypes.c_int64, ctypes.c_void_p
                    lib.mixlab_grid_convex.argtypes = [i64] * 4 + [ptr] * 4
                    lib.mixlab_grid_swap.argtypes = [i64] * 4 + [ptr] * 5 + [i64, ptr]
                    lib.mixlab_grid_convex.restype = lib.mixlab_grid_swap.restype = ctypes.c_int
                    _state["lib"] = lib
                except Exception as error:  # whatever went wrong, scipy runs: say why
                    _state["reason"] = f"{type(error).__name__}: {error}"
        return _state.get("lib")


def status() -> str:
    """``"compiled"``, or why the scipy fallback is used."""
    return "compiled" if _load() is not None else f"scipy fallback ({_state['reason']})"


def reset() -> None:
    """Forgets the loaded kernel, so the next call tries again (e.g. after changing ``MIXLAB_NATIVE``)."""
    with _lock:
        _state.clear()


# ------------------------------------------------------------------------------------------------ helpers
def grid_edges(h: int, w: int) -> tuple[Tensor, Tensor]:
    """Node indices ``(p, q)`` of the grid's edges, vertical ones (row r to r+1) first, then horizontal ones."""
    idx = torch.arange(h * w).reshape(h, w)
    return (torch.cat([idx[:-1].flatten(), idx[:, :-1].flatten()]),
            torch.cat([idx[1:].flatten(), idx[:, 1:].flatten()]))


def energy(labels: Tensor, unary: Tensor, wv: Tensor, wh: Tensor, label_cost: Tensor | None = None) -> Tensor:
    """``E(l)`` per problem ``(G,)``; ``labels`` ``(G, h, w)``; ``label_cost`` ``(L, L)`` or ``(G, L, L)``, default
    ``(a - b)^2``. Works in the dtype of ``unary`` (float or integer) on any device."""
    g, h, w, n_labels = unary.shape
    lab = labels.reshape(g, h * w).long().to(unary.device)
    total = unary.reshape(g, h * w, n_labels).gather(2, lab[..., None]).squeeze(2).sum(1)
    p, q = (t.to(unary.device) for t in grid_edges(h, w))
    weights = torch.cat([wv.reshape(g, -1), wh.reshape(g, -1)], 1).to(unary.dtype)
    if label_cost is None:
        pair = (lab[:, p] - lab[:, q]).pow(2).to(unary.dtype)
    else:
        cost = label_cost.to(unary.device, unary.dtype).expand(g, n_labels, n_labels)
        pair = cost[torch.arange(g, device=unary.device)[:, None], lab[:, p], lab[:, q]]
    return total + (weights * pair).sum(1)


def _check(unary: Tensor, wv: Tensor, wh: Tensor) -> tuple[int, int, int, int]:
    if unary.dim() != 4:
        raise ValueError(f"unary must be (G, h, w, L), got shape {tuple(unary.shape)}")
    g, h, w, n_labels = unary.shape
    if tuple(wv.shape) != (g, h - 1, w) or tuple(wh.shape) != (g, h, w - 1):
        raise ValueError(f"for unary {tuple(unary.shape)} the edge weights must be wv {(g, h - 1, w)} and wh "
                         f"{(g, h, w - 1)}; got {tuple(wv.shape)} and {tuple(wh.shape)}")
    for name, t in (("unary", unary), ("wv", wv), ("wh", wh)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (scale and round float costs first), got {t.dtype}")
    if n_labels < 1:
        raise ValueError("need at least one label")
    if (wv.numel() and int(wv.min()) < 0) or (wh.numel() and int(wh.min()) < 0):
        raise ValueError("edge weights must be >= 0 (a negative weight makes the energy non-submodular)")
    return g, h, w, n_labels


def _as_np(t: Tensor, dtype) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(dtype, copy=False))


def _max_abs(t: Tensor) -> int:
    return int(t.abs().max()) if t.numel() else 0


# ------------------------------------------------------------------------------------------------ convex
def solve_convex(unary: Tensor, wv: Tensor, wh: Tensor, backend: str = "auto") -> Tensor:
    """The labelling of minimum energy with ``V(a, b) = (a - b)^2``, exactly (see the module docstring).

    Args: ``unary`` ``(G, h, w, L)``, ``wv`` ``(G, h-1, w)``, ``wh`` ``(G, h, w-1)``, integer tensors; ``backend``
    ``"auto"`` (compiled if available), ``"native"`` or ``"scipy"``.
    Returns: ``(G, h, w)`` int64 labels on the device of ``unary``. Among several minimisers, the smallest labels.
    """
    g, h, w, n_labels = _check(unary, wv, wh)
    edges = (h - 1) * w + h * (w - 1)
    bound = 4 * (h * w * n_labels * _max_abs(unary) + edges * max(_max_abs(wv), _max_abs(wh)) * 4 * n_labels ** 2)
    if bound >= _LIMIT:
        raise ValueError("costs too large: keep |unary| and the weights below about 2^50 / (grid size x labels^2)")
    if g == 0 or n_labels == 1:
        return torch.zeros(g, h, w, dtype=torch.long, device=unary.device)
    lib = _backend(backend)
    if lib is None:
        labels = _convex_scipy(unary.cpu().long(), wv.cpu().long(), wh.cpu().long())
    else:
        u, a, b = _as_np(unary, np.int64), _as_np(wv, np.int64), _as_np(wh, np.int64)
        out = np.empty((g, h * w), dtype=np.int32)
        if lib.mixlab_grid_convex(g, h, w, n_labels, u.ctypes.data, a.ctypes.data, b.ctypes.data, out.ctypes.data):
            raise MemoryError("the graph-cut kernel could not allocate its work buffers")
        labels = torch.from_numpy(out.astype(np.int64))
    return labels.reshape(g, h, w).to(unary.device)


def _backend(backend: str):
    if backend not in ("auto", "native", "scipy"):
        raise ValueError(f"backend must be 'auto', 'native' or 'scipy', got {backend!r}")
    if backend == "scipy":
        return None
    lib = _load()
    if lib is None and backend == "native":
        raise RuntimeError(f"the compiled graph-cut kernel is not available: {_state['reason']}")
    return lib


def _convex_arcs(unary: Tensor, weights: Tensor, p: Tensor, q: Tensor):
    """Ishikawa's graph for every problem (as ``_graphcut.c`` builds it): arcs ``(tail, head, capacity)`` with
    node 0 the source, 1 the sink and ``2 + (g V + p) K + k`` the variable ``[l_p > k]``; and each problem's total
    finite capacity."""
    g, v, n_labels = unary.shape
    k_count = n_labels - 1
    k = torch.arange(k_count)
    coef = (unary[..., 1:] - unary[..., :-1]).clone()  # (G, V, K)
    wt = weights[..., None]  # (G, E, 1)
    coef.index_add_(1, p, wt * (2 * k + 1 - 2 * k_count))
    coef.index_add_(1, q, wt * (2 * k + 1))
    node = 2 + torch.arange(g * v * k_count).reshape(g, v, k_count)
    tails = [node[:, p, i].flatten() for i in range(k_count) for _ in range(k_count)]
    heads = [node[:, q, j].flatten() for _ in range(k_count) for j in range(k_count)]
    caps = [(2 * weights).flatten()] * (k_count * k_count)
    total = 2 * weights.sum(1) * k_count ** 2 + coef.abs().sum((1, 2))
    pos, neg = coef > 0, coef < 0
    tails += [node[pos], torch.zeros(int(neg.sum()), dtype=torch.long)]
    heads += [torch.ones(int(pos.sum()), dtype=torch.long), node[neg]]
    caps += [coef[pos], -coef[neg]]
    inf = (total + 1)[:, None, None].expand(g, v, max(k_count - 1, 0))
    tails.append(node[:, :, 1:].flatten())
    heads.append(node[:, :, :-1].flatten())
    caps.append(inf.flatten())
    return torch.cat(tails), torch.cat(heads), torch.cat(caps), total, node


def _min_cut_scipy(tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, n: int) -> np.ndarray:
    """Source side (bool per node) of the smallest minimum cut between node 0 and node 1 (int32 capacities)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    keep = caps > 0
    graph = sp.csr_matrix((caps[keep].astype(np.int32), (tails[keep], heads[keep])), shape=(n, n))
    flow = maximum_flow(graph, 0, 1, method="dinic").flow
    residual = (graph - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    side = np.zeros(n, dtype=bool)
    side[reached] = True
    return side


_INT32_SAFE = (1 << 30) - 1  # scipy's maximum_flow works in int32 (it silently wraps larger capacities)


def _convex_scipy(unary: Tensor, wv: Tensor, wh: Tensor) -> Tensor:
    g, h, w, n_labels = unary.shape
    p, q = grid_edges(h, w)
    weights = torch.cat([wv.reshape(g, -1), wh.reshape(g, -1)], 1)
    unary = unary.reshape(g, h * w, n_labels)
    sizes = (2 * _convex_arcs(unary, weights, p, q)[3] + 1).tolist()  # finite capacity, plus one infinite arc
    labels = torch.empty(g, h * w, dtype=torch.long)
    start = 0
    while start < g:  # chunks of problems whose capacities fit int32 together
        stop, acc = start, 0
        while stop < g:
            size = sizes[stop]
            if size > _INT32_SAFE:
                raise ValueError("costs too large for the scipy fallback (int32 capacities): scale them down, or "
                                 "let the compiled kernel run (a C compiler, MIXLAB_NATIVE unset)")
            if stop > start and acc + size > _INT32_SAFE:
                break
            acc += size
            stop += 1
        tails, heads, caps, _, node = _convex_arcs(unary[start:stop], weights[start:stop], p, q)
        side = _min_cut_scipy(tails.numpy(), heads.numpy(), caps.numpy(), int(node.max()) + 1 if node.numel() else 2)
        labels[start:stop] = torch.from_numpy(side[node.numpy()]).sum(-1)
        start = stop
    return labels


# ------------------------------------------------------------------------------------------------ swap
def solve_swap(unary: Tensor, label_cost: Tensor, wv: Tensor, wh: Tensor, init: Tensor, max_cycles: int = 100,
               backend: str = "auto") -> Tensor:
    """Alpha-beta swap moves from ``init`` until a cycle over all label pairs improves nothing (or ``max_cycles``).

    Args: ``unary`` ``(G, h, w, L)``, ``label_cost`` ``(L, L)`` or ``(G, L, L)`` symmetric, ``>= 0``, zero on the
    diagonal; ``wv``, ``wh`` edge weights; ``init`` ``(G, h, w)`` starting labels; all integer tensors.
    Returns: ``(G, h, w)`` int64 labels (a local minimum: no single swap move lowers the energy).
    """
    g, h, w, n_labels = _check(unary, wv, wh)
    vl = label_cost.long().cpu().expand(g, n_labels, n_labels).contiguous()
    if label_cost.is_floating_point():
        raise TypeError(f"label_cost must be an integer tensor, got {label_cost.dtype}")
    if vl.numel() and (int(vl.min()) < 0 or not torch.equal(vl, vl.transpose(1, 2))
                       or bool(vl.diagonal(dim1=1, dim2=2).any())):
        raise ValueError("label_cost must be symmetric, >= 0 and zero on the diagonal (a semi-metric)")
    if tuple(init.shape) != (g, h, w) or (init.numel() and (int(init.min()) < 0 or int(init.max()) >= n_labels)):
        raise ValueError(f"init must be (G, h, w) = {(g, h, w)} labels in [0, {n_labels - 1}]")
    edges = (h - 1) * w + h * (w - 1)
    bound = 4 * (h * w * _max_abs(unary) + edges * max(_max_abs(wv), _max_abs(wh)) * _max_abs(vl))
    if bound >= _LIMIT:
        raise ValueError("costs too large: keep |unary|, the weights and label costs below about 2^50 / grid size")
    lib = _backend(backend)
    if lib is None:
        if backend == "auto" and not _state.get("warned"):
            _state["warned"] = True
            warnings.warn(f"graph-cut swap moves run in Python with one scipy cut per move, about 100x slower than the "
                          f"compiled kernel ({status()})", RuntimeWarning, stacklevel=2)
        labels = _swap_python(unary.cpu().long(), vl, wv.cpu().long(), wh.cpu().long(), init.cpu().long(), max_cycles)
    else:
        u, v, a, b = (_as_np(t, np.int64) for t in (unary, vl, wv, wh))
        out = _as_np(init.reshape(g, h * w), np.int32).copy()
        cycles = np.zeros(g, dtype=np.int64)
        if lib.mixlab_grid_swap(g, h, w, n_labels, u.ctypes.data, v.ctypes.data, a.ctypes.data, b.ctypes.data,
                                out.ctypes.data, int(max_cycles), cycles.ctypes.data):
            raise MemoryError("the graph-cut kernel could not allocate its work buffers")
        labels = torch.from_numpy(out.astype(np.int64))
    return labels.reshape(g, h, w).to(unary.device)


def _swap_python(unary: Tensor, vl: Tensor, wv: Tensor, wh: Tensor, init: Tensor, max_cycles: int) -> Tensor:
    """The moves of ``mixlab_grid_swap``, one scipy cut per move (the fallback, and the tests' reference)."""
    g, h, w, n_labels = unary.shape
    p, q = (t.numpy() for t in grid_edges(h, w))
    labels = init.reshape(g, h * w).clone()
    for b in range(g):
        u = unary[b].reshape(h * w, n_labels).numpy()
        v = vl[b].numpy()
        we = torch.cat([wv[b].flatten(), wh[b].flatten()]).numpy()
        lab = labels[b].numpy()

        def total(lab):
            return int(u[np.arange(h * w), lab].sum() + (we * v[lab[p], lab[q]]).sum())

        current, cycle, improved = total(lab), 0, True
        while improved and cycle < max_cycles:
            improved, cycle = False, cycle + 1
            for la in range(n_labels):
                for lb in range(la + 1, n_labels):
                    active = (lab == la) | (lab == lb)
                    if not active.any():
                        continue
                    node = np.full(h * w, -1)
                    node[active] = 2 + np.arange(int(active.sum()))
                    c0, c1 = u[:, la].copy(), u[:, lb].copy()
                    both = active[p] & active[q]
                    only_p, only_q = active[p] & ~active[q], active[q] & ~active[p]
                    np.add.at(c0, p[only_p], we[only_p] * v[la, lab[q[only_p]]])
                    np.add.at(c1, p[only_p], we[only_p] * v[lb, lab[q[only_p]]])
                    np.add.at(c0, q[only_q], we[only_q] * v[la, lab[p[only_q]]])
                    np.add.at(c1, q[only_q], we[only_q] * v[lb, lab[p[only_q]]])
                    lo = np.minimum(c0, c1)
                    pair = we[both] * v[la, lb]
                    nodes = node[active]
                    tails = np.concatenate([node[p[both]], node[q[both]], np.zeros_like(nodes), nodes])
                    heads = np.concatenate([node[q[both]], node[p[both]], nodes, np.ones_like(nodes)])
                    caps = np.concatenate([pair, pair, (c0 - lo)[active], (c1 - lo)[active]])
                    if caps.sum() > _INT32_SAFE:
                        raise ValueError("costs too large for the scipy fallback (int32 capacities)")
                    side = _min_cut_scipy(tails, heads, caps, int(active.sum()) + 2)
                    cand = lab.copy()
                    cand[active] = np.where(side[node[active]], lb, la)
                    new = total(cand)
                    if new < current:
                        current, lab, improved = new, cand, True
        labels[b] = torch.from_numpy(np.asarray(lab))
    return labels
