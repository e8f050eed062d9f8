"""Speed and accuracy of the OT solvers, step-time overhead of the OT / embedding methods (``mixlab bench-ot``).

1. Barycenters of ``--pairs`` pairs of 28x28 MNIST digits at ``reg`` (0.004): ours (batched, log domain) vs
   POT's ``ot.bregman.convolutional_barycenter2d`` looped over the pairs, same run, same threads. Accuracy: L1
   distance of ours to POT run to convergence (stopThr 1e-7); speed: POT looped at its default stopThr (1e-4)
   over ours, the ratio of the medians of ``--repeats`` runs of each, interleaved (POT takes about 1.8 s a run;
   each timed run of ours follows an untimed one, as in a loop over batches). POT is a benchmark dependency only.
   ``--backend``: where our float32 iterations run (see ``mixlab.ot.native``); when that is the compiled kernel,
   the PyTorch iteration is timed in the same runs too and reported beside it.
2. Step time (forward + backward + SGD step) on PreActResNet-18, batch 128, 32x32 inputs: ERM, AlignMixup and
   MultiMix (n = 1000), interleaved, median of ``--steps`` steps each; ratios against ERM.
3. AlignMixup's Sinkhorn (:func:`mixlab.ot.sinkhorn`) against the authors' algorithm (:func:`authors_sinkhorn`)
   on the same cost matrices: ``--sinkhorn-batch`` (128) pairs of feature maps with ``r`` positions
   (``--sinkhorn-sizes``: 16 = 4x4, 64 = 8x8) of ``--sinkhorn-channels`` (512) BN-ReLU-like features (ReLU of
   standard normals; the partner is a permutation of the batch, as in AlignMixup), eps 0.1, 100 iterations for
   both; the two alternate ``--repeats`` times and the paired time ratios are reported (median and range).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .timing import timed, timed_call

if TYPE_CHECKING:
    from torch import Tensor

#: issue 20: AlignMixup's Sinkhorn at least this many times as fast as the authors' algorithm
SINKHORN_GOAL = 5.0


def barycenter_bench(pairs: int, reg: float, tol: float, data_dir=None, device="cpu", relax: float = 1.5,
                     anderson: int = 5, precision: str = "mixed", repeats: int = 3, backend: str = "auto") -> dict:
    import statistics

    import numpy as np
    import torch

    try:
        import ot
    except ImportError as error:  # pragma: no cover
        raise RuntimeError("bench-ot needs POT for the comparison: pip install pot") from error
    from ..data import load_dataset
    from ..ot import convolutional_barycenter

    data = load_dataset("mnist", "test", data_dir)
    x = data.x[: 2 * pairs, 0].double() / 255.0
    a = (x / x.sum((1, 2), keepdim=True)).reshape(pairs, 2, 28, 28)
    g = torch.Generator().manual_seed(0)
    lam = torch.rand(pairs, generator=g, dtype=torch.float64) * 0.8 + 0.1
    w = torch.stack([lam, 1 - lam], 1)
    an, wn = a.numpy(), w.numpy()

    dev = torch.device(device)
    # what the backend resolves to for these inputs (auto: the compiled kernel where it applies), named in the results
    backend = convolutional_barycenter(a[:1].float().to(dev), w[:1].float().to(dev), reg, tol=tol, precision=precision,
                                       backend=backend, log=True)[1]["backend"]
    backends = [backend] + (["torch"] if backend == "native" else [])  # the PyTorch iteration timed alongside
    ot.bregman.convolutional_barycenter2d(an[0], reg, wn[0], warn=False)  # warm-up (ours: in the loop)
    times, pot_times = {b: [] for b in backends}, []
    results = {}
    for _ in range(max(1, repeats)):  # interleaved, so both see the same load on the machine
        for b in backends:
            solver = dict(tol=tol, relax=relax, anderson=anderson, precision=precision, backend=b)
            # an untimed run first: after POT's seconds on one thread, PyTorch's worker threads have gone to sleep
            # and the caches hold POT's data; a loop over batches (cache building, training) runs warm
            convolutional_barycenter(a.float().to(dev), w.float().to(dev), reg, **solver)
            (bar, info), seconds = timed_call(
                lambda: convolutional_barycenter(a.float().to(dev), w.float().to(dev), reg, log=True, **solver), dev)
            times[b].append(seconds)
            results[b] = bar.cpu(), info
        runs, seconds = timed_call(lambda: [ot.bregman.convolutional_barycenter2d(an[i], reg, wn[i], warn=False,
                                                                                 log=True) for i in range(pairs)])
        pot_times.append(seconds)
        pot, pot_iters = [bar for bar, _ in runs], sum(log["niter"] for _, log in runs)
    t_pot = statistics.median(pot_times)
    ours, info = results[backend]
    t_ours = statistics.median(times[backend])
    ref = np.stack([ot.bregman.convolutional_barycenter2d(an[i], reg, wn[i], stopThr=1e-7, numItermax=20000,
                                                          warn=False) for i in range(pairs)])
    l1 = (ours.double() - torch.from_numpy(ref)).abs().sum((1, 2))
    pot_l1 = np.abs(np.stack(pot) - ref).sum((1, 2))  # how far POT's own timed result is: the accuracy we are timed at
    iters = float(info["niter"].sum())
    extra = {}
    if backend == "native":
        t_torch = statistics.median(times["torch"])
        l1_torch = (results["torch"][0].double() - torch.from_numpy(ref)).abs().sum((1, 2))
        extra = {"torch_backend_seconds": t_torch, "torch_backend_speedup": t_pot / t_torch,
                 "torch_backend_l1_max": float(l1_torch.max()), "torch_backend_seconds_all": times["torch"],
                 "torch_backend_iterations_mean": float(results["torch"][1]["niter"].float().mean())}
    return {"pairs": pairs, "reg": reg, "tol": tol, "backend": backend, "ours_seconds": t_ours, "pot_seconds": t_pot,
            "speedup": t_pot / t_ours, "l1_max": float(l1.max()), "l1_mean": float(l1.mean()),
            "pot_l1_max": float(pot_l1.max()), "pot_l1_mean": float(pot_l1.mean()),
            "iterations_mean": float(info["niter"].float().mean()), "iterations_max": int(info["niter"].max()),
            "pot_iterations_mean": pot_iters / pairs, "relax": relax, "anderson": anderson, "precision": precision,
            "repeats": len(pot_times), "ours_seconds_all": times[backend], "pot_seconds_all": pot_times,
            "speedup_per_repeat": [p / o for p, o in zip(pot_times, times[backend])],
            "iterations_exact_mean": float(info["niter_exact"].float().mean()),
            "ours_us_per_pair_iteration": 1e6 * t_ours / iters, "pot_us_per_iteration": 1e6 * t_pot / pot_iters,
            **extra}


def step_bench(steps: int, batch_size: int, device="cpu") -> dict:
    import statistics

    import torch

    from ..models import MODELS
    from ..registry import METHODS

    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, device=dev)
    t = torch.nn.functional.one_hot(torch.randint(10, (batch_size,)), 10).float().to(dev)
    names = ("erm", "alignmix", "multimix")
    runs = {}
    for name in names:
        model = MODELS.create("preactresnet18", num_classes=10).to(dev)
        method = METHODS.create(name, num_classes=10, seed=0, check_inputs=False).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        runs[name] = (model, method, opt)
    times = {n: [] for n in names}

    def step(name):
        model, method, opt = runs[name]

        def one():
            loss = method.training_loss(model, x, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return timed(one, dev)

    for name in names:  # warm-up
        step(name)
    for _ in range(steps):  # interleaved, so load on the machine hits all methods alike
        for name in names:
            times[name].append(step(name))
    # AlignMixup: half the steps are input mixup; time both branches and report their mean
    model, method, opt = runs["alignmix"]
    branch = {}
    for p_input, key in ((0.0, "alignmix_aligned"), (1.0, "alignmix_input")):
        method.p_input = p_input
        branch[key] = statistics.median(step("alignmix") for _ in range(max(1, steps // 2 + 1)))
    med = {n: statistics.median(v) for n, v in times.items()}
    med.update(branch)
    med["alignmix_expected"] = 0.5 * (branch["alignmix_aligned"] + branch["alignmix_input"])
    return {"batch_size": batch_size, "steps": steps, "seconds": med,
            "ratio_vs_erm": {k: v / med["erm"] for k, v in med.items() if k != "erm"}}


def authors_sinkhorn(cost: Tensor, eps: float, max_iter: int = 100, thresh: float = 0.1) -> Tensor:
    """The Sinkhorn loop of the AlignMixup code (shashankvkt/AlignMixup_CVPR22, ``utils/OT.py``), a benchmark
    baseline: log-domain dual ascent on ``u, v`` with ``M_ij = (u_i + v_j - C_ij) / eps`` rebuilt for every
    half-step, marginals ``log(1/r + 1e-8)``, the batch-mean L1 change of ``u`` read on the host after every
    iteration (stop below ``thresh``; pass 0 to run all ``max_iter``). ``cost`` (B, r, s) -> plans (B, r, s)."""
    import torch

    b, r, s = cost.shape
    log_mu = torch.full((b, r), 1.0 / r, dtype=cost.dtype, device=cost.device).add_(1e-8).log_()
    log_nu = torch.full((b, s), 1.0 / s, dtype=cost.dtype, device=cost.device).add_(1e-8).log_()
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)

    def modified_cost(u, v):
        return (-cost + u[:, :, None] + v[:, None, :]) / eps

    for _ in range(max_iter):
        u_prev = u
        u = eps * (log_mu - torch.logsumexp(modified_cost(u, v), dim=-1)) + u
        v = eps * (log_nu - torch.logsumexp(modified_cost(u, v).transpose(-2, -1), dim=-1)) + v
        if float((u - u_prev).abs().sum(-1).mean()) < thresh:
            break
    return torch.exp(modified_cost(u, v))


def sinkhorn_bench(sizes=(16, 64), batch: int = 128, channels: int = 512, eps: float = 0.1, iters: int = 100,
                   repeats: int = 3, device="cpu") -> dict:
    """Ours against :func:`authors_sinkhorn` on the same costs, alternating; paired time ratios per size."""
    import statistics

    import torch

    from ..ot import sinkhorn, squared_distances

    dev = torch.device(device)
    out = {"batch": batch, "channels": channels, "eps": eps, "iterations": iters, "sizes": {}}
    for r in sizes:
        g = torch.Generator().manual_seed(r)
        x = torch.randn(batch, r, channels, generator=g).relu_().to(dev)  # BN-ReLU-like feature maps
        y = x[torch.randperm(batch, generator=g).to(dev)]
        cost = squared_distances(x, y)

        def ours():
            return sinkhorn(x, y, eps, max_iter=iters, tol=0, cost=cost)

        def theirs():
            return authors_sinkhorn(cost, eps, max_iter=iters, thresh=0.0)

        t_ours, t_theirs = [], []
        plan, ref = ours(), theirs()  # warm-up
        for _ in range(max(1, repeats)):  # alternating, so load on the machine hits both alike
            t_theirs.append(timed(theirs, dev))
            t_ours.append(timed(ours, dev))
        ratios = [a / b for a, b in zip(t_theirs, t_ours)]
        out["sizes"][r] = {"ours_seconds": statistics.median(t_ours), "authors_seconds": statistics.median(t_theirs),
                           "speedup": statistics.median(ratios), "speedup_min": min(ratios),
                           "speedup_max": max(ratios), "speedup_per_repeat": ratios,
                           "max_abs_plan_diff": float((plan - ref).abs().max())}
    return out
