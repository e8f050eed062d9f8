"""What each method costs on this device, against ERM measured in the same run (``mixlab perf``).

For every registered method (built by the real ``Trainer.setup()``, so ``setup(context)`` hooks run) on one
fixed batch: the training step (``method.training_loss`` + backward + optimiser step, exactly the engine's) relative
to an ERM step on the same model and batch, the mixing time alone, and the memory a step needs. Steps of the method
and of its baselines alternate, and the median of the paired ratios of ``--repeats`` timings after ``--warmup`` is
reported, so load from other jobs hits both alike. Each method with a speed goal is marked against it
(:data:`TARGETS`; issue 20: AMP against its plain mixer, OptTransMix per sample). ``--goals`` measures just the
goals of issue 20, and the engine against a plain batched PyTorch loop (``--engine-vs-loop``). Optional: the OT
solvers against their references (POT; AlignMixup's Sinkhorn against the authors' algorithm).
"""
from __future__ import annotations

import statistics
import time

from .timing import median_ms, synchronize, timed

#: step-time targets (the issues' figures): relative to ERM's step unless a baseline is named; "input mixer" means
#: every plain input mixer (:func:`plain_input_mixer`). amp+X: relative to X's step; opttransmix: per sample,
#: relative to ERM's.
TARGETS = {"input mixer": 1.05, "alignmix": 1.2, "multimix": 1.3, "amp": 2.1, "transformmix": 1.3,
           "opttransmix": 1.05}
#: issue 20: the engine faster than a plain batched PyTorch loop (samples per second, engine / loop)
ENGINE_GOAL = 1.0
#: ``--goals``: the methods (with the options) whose goals issue 20 sets. TransformMix's step costs the same whatever
#: its module learnt, so one search epoch suffices to time it; MultiMix's goal is at n = 5000.
GOAL_METHODS = {"amp+mixup": {}, "transformmix": {"search_epochs": 1}, "opttransmix": {},
                "multimix": {"n": 5000}}


class Bench:
    """One method's trainer plus a fixed batch; ``step()`` is exactly the engine's step."""

    def __init__(self, trainer, batch_size: int):
        import torch

        self.trainer, self.device = trainer, trainer.device
        n = trainer.x_train.shape[0]
        if n < batch_size:
            raise ValueError(f"batch size {batch_size} > {n} training examples")
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(n, generator=g)[:batch_size].to(self.device)
        x = trainer.train_batch(idx, g)
        if trainer.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self.x, self.t = x, trainer.t_train[idx]
        trainer.model.train()
        trainer.method.train()

    def forward(self):
        return self.trainer.step_loss(self.x, self.t)

    def step(self) -> None:
        self.trainer.optimizer_step(self.forward())

    def mix(self):
        with self.trainer.autocast():
            return self.trainer.method.mix(self.x, self.t)

    def samples_per_step(self) -> int:
        """Examples one step trains on: the batch, plus what the method adds (OptTransMix's barycenters)."""
        count = getattr(self.trainer.method, "samples_per_step", None)
        return count(self.x.shape[0]) if count else self.x.shape[0]

    def memory_mb(self) -> tuple[float, str]:
        """Memory one step needs beyond what is resident: the allocator's peak (CUDA), or the bytes autograd
        holds for backward, i.e. activation memory (CPU, where torch keeps no allocator statistics)."""
        import torch

        if self.device.type == "cuda":
            synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.step()
            synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - before) / 2**20, "peak"
        storages = {}
        resident = {p.untyped_storage().data_ptr() for m in (self.trainer.model, self.trainer.method)
                    for p in m.parameters()}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in resident:  # weights are resident, not activations
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.forward()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return sum(storages.values()) / 2**20, "saved"


def paired(a: list[float], b: list[float]) -> dict:
    """Median and range of the ratios ``a_i / b_i`` of timings taken next to each other."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def compare(bench: Bench, erm: Bench, repeats: int, warmup: int, base: tuple[str, Bench] | None = None) -> dict:
    """Alternate steps of the method, ERM and ``base`` (``(name, bench)``: the method's own baseline, e.g. AMP's
    plain mixer); medians, paired ratios, mixing time, memory, per-sample cost."""
    from ..methods.base import InputMixer

    dev = bench.device
    benches = [bench, erm] + ([base[1]] if base else [])
    for _ in range(warmup):
        for b in benches:
            b.step()
    times = [[] for _ in benches]
    for _ in range(repeats):
        for b, t in zip(benches, times):
            t.append(timed(b.step, dev))
    t_m, t_e = times[0], times[1]
    f_m, f_e = [], []
    for _ in range(max(3, repeats // 2)):
        f_m.append(timed(bench.forward, dev))
        f_e.append(timed(erm.forward, dev))
    method = bench.trainer.method
    input_mixer = isinstance(method, InputMixer) and type(method).training_loss is InputMixer.training_loss
    if input_mixer:
        mix_ms, mix_kind = median_ms([timed(bench.mix, dev) for _ in range(repeats)]), "mix()"
    else:
        mix_ms, mix_kind = median_ms(f_m) - median_ms(f_e), "forward - ERM forward"
    mem, mem_kind = bench.memory_mb()
    mem_erm, _ = erm.memory_mb()
    step_ms, erm_ms = median_ms(t_m), median_ms(t_e)
    ratio = paired(t_m, t_e)  # paired: neighbours in time share the load
    samples, erm_samples = bench.samples_per_step(), erm.samples_per_step()
    row = {"step_ms": step_ms, "erm_step_ms": erm_ms, "step_ratio": ratio["median"],
           "step_ratio_range": [ratio["min"], ratio["max"]], "forward_ms": median_ms(f_m), "mix_ms": mix_ms,
           "mix_share": mix_ms / erm_ms, "mix_kind": mix_kind, "memory_mb": mem, "erm_memory_mb": mem_erm,
           "memory_ratio": mem / mem_erm if mem_erm else None, "memory_kind": mem_kind, "input_mixer": input_mixer,
           "samples_per_step": samples,
           "per_sample_ratio": ratio["median"] * erm_samples / samples,
           "per_sample_ratio_range": [ratio["min"] * erm_samples / samples, ratio["max"] * erm_samples / samples]}
    if base:
        r = paired(t_m, times[2])
        row.update({"base": base[0], "base_step_ms": median_ms(times[2]), "base_ratio": r["median"],
                    "base_ratio_range": [r["min"], r["max"]]})
    return row


def plain_input_mixer(name: str) -> bool:
    """A registered stateless input mixer other than ERM (:func:`mixlab.methods.base.is_plain_input_mixer`): they
    share the "input mixer" target, so a new one is held to it without a list to edit."""
    from ..methods.base import is_plain_input_mixer
    from ..registry import METHODS

    return name != "erm" and name in METHODS and is_plain_input_mixer(METHODS.create(name))


def goal_for(name: str) -> tuple[float, str] | None:
    """``(target, measure)``: the speed goal of a method and which ratio of :func:`compare` it bounds."""
    if name.startswith("amp+"):
        return TARGETS["amp"], "base_ratio"
    if name == "opttransmix":
        return TARGETS["opttransmix"], "per_sample_ratio"
    if name in TARGETS:
        return TARGETS[name], "step_ratio"
    return (TARGETS["input mixer"], "step_ratio") if plain_input_mixer(name) else None


def baseline_of(name: str) -> str | None:
    """The method a method's goal is measured against when it is not ERM (AMP: its plain mixer)."""
    return name.partition("+")[2] if name.startswith("amp+") else None




class Builder:
    """Builds trainers through ``Trainer.setup()`` (so methods' ``setup`` runs), loading the data once: each trainer
    is of a subclass of the engine's class for its dataset whose ``load_data`` hook takes the first one's data."""

    def __init__(self, fields: dict, out: str, data_dir=None):
        self.fields, self.out, self.data_dir = fields, out, data_dir
        self.shared: dict | None = None

    def shared_data(self, base: type) -> type:
        """``base`` (a Trainer class) whose ``load_data`` loads once per builder and then reuses that data."""
        builder = self

        class SharedData(base):
            def load_data(self) -> None:
                if builder.shared is None:
                    before = set(vars(self))
                    super().load_data()
                    builder.shared = {k: v for k, v in vars(self).items() if k not in before}
                else:
                    vars(self).update(builder.shared)

        return SharedData

    def trainer(self, method: str, kwargs: dict | None = None, fields: dict | None = None):
        """A set-up trainer for ``method`` (options ``kwargs``; ``fields`` override the shared config's)."""
        from ..config import TrainConfig
        from ..train import trainer_class

        config = TrainConfig(method=method, method_kwargs=kwargs or {}, **{**self.fields, **(fields or {})})
        trainer = self.shared_data(trainer_class(config, self.data_dir))(config, out=self.out, data_dir=self.data_dir,
                                                          progress=False, store=False)
        trainer.setup()
        return trainer


def default_fields(protocol: str | None = None, **given) -> dict:
    """The run fields perf builds its trainers with: a protocol's data, model and batch (if named), then
    ``given`` (None values left out), then digits, cnn11, batch 64 and the Table 4 augmentation. One epoch at a
    small learning rate: the same batch is stepped on many times."""
    from ..protocols import get_protocol

    fields = {}
    if protocol:
        proto = dict(get_protocol(protocol).config)
        fields = {k: proto[k] for k in ("dataset", "model", "model_kwargs", "subset_per_class", "batch_size",
                                        "crop_padding", "flip", "weight_decay", "momentum") if k in proto}
    model_kwargs = given.pop("model_kwargs", None) or {}
    fields.update({k: v for k, v in given.items() if v is not None})
    fields.setdefault("dataset", "digits")
    fields.setdefault("model", "cnn11")
    fields.setdefault("batch_size", 64)
    fields.setdefault("crop_padding", 2)  # the Table 4 augmentation unless a protocol says otherwise
    fields.setdefault("flip", True)
    fields["model_kwargs"] = {**fields.get("model_kwargs", {}), **model_kwargs}
    return dict(fields, lr=0.01, epochs=1, test_limit=1)


def method_rows(builder: Builder, erm: Bench, names, kwargs: dict, repeats: int, warmup: int, device) -> dict:
    """Per method: :func:`compare` against ERM (and its own baseline, :func:`baseline_of`), its options and
    goal; ``{"error": ...}`` for a method this dataset / model cannot run."""
    import torch

    batch = builder.fields["batch_size"]
    rows = {}
    for name in names:
        try:
            bench = Bench(builder.trainer(name, kwargs.get(name)), batch)
            base = baseline_of(name)
            base = (base, Bench(builder.trainer(base), batch)) if base else None
            row = compare(bench, erm, repeats, warmup, base)
            if kwargs.get(name):
                row["options"] = kwargs[name]
            goal = goal_for(name)
            row["target"] = goal[0] if goal else None
            rows[name] = row
            del bench, base
        except Exception as error:  # a method this dataset / model cannot run: report it, go on
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- adapter
ADAPTER_TARGET = 1.02


def adapted(model):
    """``model`` (a StagedNet) as a user's plain module seen through :func:`mixlab.stage`: its stages named as the
    mixing points and ``head`` as the classifier; same modules and weights."""
    from ..models.adapter import StagedAdapter

    return StagedAdapter(model, [f"stages.{i}" for i in range(model.num_stages)], "head",
                         mix_stages=model.mix_stages)


def adapter_comparison(builder: Builder, names: list[str], kwargs: dict, batch_size: int, repeats: int,
                       warmup: int, report=None) -> dict:
    """Per method: the step on the adapted model against the step on the staged model, alternating (paired);
    ``report(name, row)`` is called as each row is measured."""
    rows = {}
    for name in names:
        try:
            staged = Bench(builder.trainer(name, kwargs.get(name)), batch_size)
            trainer = builder.trainer(name, kwargs.get(name))
            trainer.model = adapted(trainer.model)  # same parameter objects: the optimiser is unchanged
            r = compare(Bench(trainer, batch_size), staged, repeats, warmup)
            rows[name] = {"adapter_step_ms": r["step_ms"], "staged_step_ms": r["erm_step_ms"],
                          "ratio": r["step_ratio"], "ratio_range": r["step_ratio_range"], "target": ADAPTER_TARGET}
        except Exception as error:
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
        if report is not None:
            report(name, rows[name])
    return rows


def dispatch_comparison(repeats: int = 400) -> dict:
    """The adapter's own cost, free of compute noise: one staged pass (stages to 2, the rest, pool, head) of a
    tiny PreActResNet-18 (width 4) on one 8x8 image, staged model and adapter alternating; medians in us."""
    import torch

    from ..models import MODELS

    with torch.random.fork_rng():
        torch.manual_seed(0)
        staged = MODELS.create("preactresnet18", num_classes=10, width=4).eval()
    net, x = adapted(staged), torch.zeros(1, 3, 8, 8)

    def one_pass(model):
        return model.head(model.pool(model.forward_features(model.forward_features(x, 0, 2), 2, None)))

    times = {"staged": [], "adapter": []}
    with torch.no_grad():
        net.verify(x)
        for i in range(repeats + 5):
            for key, model in (("staged", staged), ("adapter", net)):
                t0 = time.perf_counter()
                one_pass(model)
                if i >= 5:
                    times[key].append(time.perf_counter() - t0)
    diff = [a - b for a, b in zip(times["adapter"], times["staged"])]
    return {"staged_us": 1e6 * statistics.median(times["staged"]),
            "adapter_us": 1e6 * statistics.median(times["adapter"]), "difference_us": 1e6 * statistics.median(diff)}


def stage_methods() -> list[str]:
    """ERM and every registered method that runs the model's stages (feature-space and text methods)."""
    from ..registry import METHODS

    return ["erm"] + [n for n in METHODS.names() if getattr(METHODS.create(n, num_classes=2), "needs_stages", False)]


# ------------------------------------------------------------------------------------------ OT references
def ot_comparison(device, repeats: int = 5) -> dict:
    """mixlab.ot's batched solvers against POT's convolutional barycenter and a per-sample Sinkhorn loop."""
    try:
        from .. import ot as mot
    except ImportError:
        return {"skipped": "mixlab.ot is not on this branch yet"}
    import numpy as np
    import ot as pot
    import torch

    out = {}
    g = torch.Generator().manual_seed(0)
    b, n, d, eps = 16, 64, 8, 0.5
    x = torch.randn(b, n, d, generator=g)
    y = torch.randn(b, n, d, generator=g)
    try:
        def ours():
            return mot.sinkhorn(x.to(device), y.to(device), eps, max_iter=1000, tol=1e-9)

        plan = ours()
        t_batch = median_ms([timed(ours, device) for _ in range(repeats)])
        uniform = np.full(n, 1.0 / n)

        def loop():  # the straightforward reference: one POT solve per sample
            return [pot.sinkhorn(uniform, uniform, mot.squared_distances(x[i:i + 1], y[i:i + 1])[0].double().numpy(),
                                 eps, method="sinkhorn_log", numItermax=1000, stopThr=1e-9) for i in range(b)]

        ref = loop()
        t_loop = median_ms([timed(loop, device) for _ in range(repeats)])
        plan = plan.detach().double().cpu()
        err = max(float(np.abs(plan[i].numpy() - ref[i]).max()) for i in range(b))
        out["sinkhorn"] = {"batch": b, "n": n, "eps": eps, "mixlab_ms": t_batch, "per_sample_loop_ms": t_loop,
                           "speedup": t_loop / t_batch, "max_abs_plan_diff": err}
    except Exception as error:  # an API this comparison does not know: say so, do not fail the table
        out["sinkhorn"] = {"skipped": f"{type(error).__name__}: {error}"}
    k, h = 2, 28
    A = torch.rand(b, k, h, h, generator=g) + 1e-3
    A = A / A.sum((2, 3), keepdim=True)
    w = torch.rand(b, k, generator=g)
    w = w / w.sum(1, keepdim=True)
    reg_b = 0.004
    try:
        bar = mot.convolutional_barycenter(A.to(device), w.to(device), reg_b)
        t_batch = median_ms([timed(lambda: mot.convolutional_barycenter(A.to(device), w.to(device), reg_b), device)
                             for _ in range(repeats)])

        def loop():
            return [pot.bregman.convolutional_barycenter2d(A[i].double().numpy(), reg_b, w[i].double().numpy())
                    for i in range(b)]

        ref = loop()
        t_loop = median_ms([timed(loop, device) for _ in range(max(1, repeats // 2))])
        bar = bar.detach().float().cpu().reshape(b, h, h)
        err = max(float(np.abs(bar[i].numpy() - ref[i]).max() / max(ref[i].max(), 1e-12)) for i in range(b))
        out["convolutional_barycenter"] = {"batch": b, "k": k, "size": h, "reg": reg_b, "mixlab_ms": t_batch,
                                           "pot_loop_ms": t_loop, "speedup": t_loop / t_batch,
                                           "max_rel_diff": err}
    except Exception as error:
        out["convolutional_barycenter"] = {"skipped": f"{type(error).__name__}: {error}"}
    return out


# ---------------------------------------------------------------------------------------- engine vs loop
def plain_loop_epoch(model, optimizer, x_train, y_train, augment, batch_size: int, generator) -> None:
    """One epoch of the plain batched PyTorch loop a user would write: the data already on the device, a shuffled
    order, the same batched augmentation, integer-label cross-entropy, default (NCHW) memory format."""
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(x_train.shape[0], generator=generator).to(x_train.device)
    for start in range(0, order.numel(), batch_size):
        idx = order[start:start + batch_size]
        if idx.numel() < 2:  # as the engine: a final batch of one is skipped
            continue
        loss = F.cross_entropy(model(augment(x_train[idx], generator)), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def engine_vs_loop(builder: Builder, epochs: int) -> dict:
    """Epochs of the engine (ERM, its defaults) and of :func:`plain_loop_epoch` (same model and initialisation,
    data, augmentation, optimiser and batch size), alternating; samples per second and the paired ratios. Also the
    engine with NCHW forced (``channels_last=False``), which isolates the engine's own per-step overhead."""
    import torch

    from ..methods.base import derive_seed

    engine = builder.trainer("erm")
    nchw = builder.trainer("erm", fields={"channels_last": False})
    c, dev = engine.config, engine.device
    torch.manual_seed(derive_seed(c.seed, "init"))  # the engine's initialisation
    model = engine.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                nesterov=c.nesterov)

    def loop(epoch):
        gen = torch.Generator().manual_seed(derive_seed(c.seed, epoch, "data"))
        plain_loop_epoch(model, optimizer, engine.x_train, engine.y_train, engine.augment, c.batch_size, gen)

    runs = {"engine": lambda e: engine.train_epoch(e), "engine_nchw": lambda e: nchw.train_epoch(e), "loop": loop}
    for fn in runs.values():  # warm-up
        fn(0)
    times = {k: [] for k in runs}
    for epoch in range(1, epochs + 1):
        for k, fn in runs.items():
            times[k].append(timed(lambda: fn(epoch), dev))
    n = engine.x_train.shape[0]
    speed = paired(times["loop"], times["engine"])
    overhead = paired(times["loop"], times["engine_nchw"])
    return {"train_size": n, "batch_size": c.batch_size, "crop_padding": c.crop_padding, "flip": c.flip,
            "epochs": epochs, "engine_channels_last": c.channels_last,
            "engine_samples_per_second": n / statistics.median(times["engine"]),
            "loop_samples_per_second": n / statistics.median(times["loop"]),
            "engine_speedup": speed["median"], "engine_speedup_range": [speed["min"], speed["max"]],
            "engine_nchw_speedup": overhead["median"], "engine_nchw_speedup_range": [overhead["min"], overhead["max"]],
            "goal": ENGINE_GOAL}
