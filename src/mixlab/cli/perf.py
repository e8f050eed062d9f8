"""``mixlab perf``: what each method costs on this device, against ERM measured in the same run.

For every registered method (built by the real ``Trainer.setup()``, so ``setup(trainer)`` hooks run) on one
fixed batch: the training step (``method.training_loss`` + backward + optimiser step) relative to an ERM step on
the same model and batch, the mixing time alone, and the memory a step needs. Steps of the method and of ERM
alternate, and the medians of ``--repeats`` timings after ``--warmup`` are compared, so load from other jobs
hits both alike. Optional sections: the OT solvers against their references (when :mod:`mixlab.ot` exists) and
the engine's throughput against a plain PyTorch loop over a ``DataLoader``.
"""
from __future__ import annotations

import statistics
import tempfile
import time

from .common import add_common, apply_threads, nonneg_int, parse_kv, positive_int, print_json
from .train import GPU_FLAGS, add_gpu_flags

#: step-time targets relative to ERM (the issues' figures); "input mixer" means the classic, parameter-free ones
TARGETS = {"input mixer": 1.05, "alignmix": 1.2, "multimix": 1.3, "amp": 2.1}
CLASSIC_INPUT_MIXERS = ("mixup", "cutmix", "bc")


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="time every method's training step against ERM on this device")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: every registered one)")
    p.add_argument("--protocol", default=None, help="take dataset, model and batch size from a protocol")
    p.add_argument("--dataset", default=None, help="default digits (needs no download)")
    p.add_argument("--model", default=None, help="default cnn11")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option (repeatable)")
    p.add_argument("--method-arg", action="append", metavar="METHOD:KEY=VALUE",
                   help="option for one method, e.g. multimix:n=1000 (repeatable)")
    p.add_argument("--subset-per-class", type=positive_int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 64, or the protocol's")
    p.add_argument("--repeats", type=positive_int, default=15, help="timed steps per method (median)")
    p.add_argument("--warmup", type=nonneg_int, default=3, help="untimed steps first")
    add_gpu_flags(p)
    p.add_argument("--no-ot", action="store_true", help="skip the OT solver comparison")
    p.add_argument("--engine-vs-dataloader", action="store_true",
                   help="also compare the engine's epoch throughput with a plain DataLoader loop")
    p.add_argument("--epochs-timed", type=positive_int, default=3, help="epochs per loop for --engine-vs-dataloader")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader workers for --engine-vs-dataloader")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_common(p)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ timing
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def median_ms(values) -> float:
    return 1000.0 * statistics.median(values)


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
        loss = self.forward()
        self.trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.trainer.optimizer.step()

    def mix(self):
        with self.trainer.autocast():
            return self.trainer.method.mix(self.x, self.t)

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


def compare(bench: Bench, erm: Bench, repeats: int, warmup: int) -> dict:
    """Alternate method and ERM steps; medians, ratio, mixing time, memory."""
    from ..methods.base import InputMixer

    dev = bench.device
    for _ in range(warmup):
        bench.step()
        erm.step()
    t_m, t_e, f_m, f_e = [], [], [], []
    for _ in range(repeats):
        t_m.append(timed(bench.step, dev))
        t_e.append(timed(erm.step, dev))
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
    ratio = statistics.median(m / e for m, e in zip(t_m, t_e))  # paired: neighbours in time share the load
    return {"step_ms": step_ms, "erm_step_ms": erm_ms, "step_ratio": ratio, "forward_ms": median_ms(f_m),
            "mix_ms": mix_ms, "mix_share": mix_ms / erm_ms, "mix_kind": mix_kind, "memory_mb": mem, "erm_memory_mb": mem_erm,
            "memory_ratio": mem / mem_erm if mem_erm else None, "memory_kind": mem_kind,
            "input_mixer": input_mixer}


def target_for(name: str, row: dict) -> float | None:
    if name.startswith("amp"):
        return TARGETS["amp"]
    if name in TARGETS:
        return TARGETS[name]
    return TARGETS["input mixer"] if name in CLASSIC_INPUT_MIXERS else None


# ----------------------------------------------------------------------------------------------- building
def base_fields(args) -> dict:
    from ..protocols import get_protocol

    fields = {}
    if args.protocol:
        proto = dict(get_protocol(args.protocol).config)
        fields = {k: proto[k] for k in ("dataset", "model", "model_kwargs", "subset_per_class", "batch_size",
                                        "crop_padding", "flip", "weight_decay", "momentum") if k in proto}
    for name in ("dataset", "model", "subset_per_class", "batch_size", *GPU_FLAGS):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    fields.setdefault("dataset", "digits")
    fields.setdefault("model", "cnn11")
    fields.setdefault("batch_size", 64)
    fields.setdefault("crop_padding", 2)  # the Table 4 augmentation unless a protocol says otherwise
    fields.setdefault("flip", True)
    fields["model_kwargs"] = {**fields.get("model_kwargs", {}), **parse_kv(args.model_arg)}
    # a small learning rate: the same batch is stepped on many times
    return dict(fields, lr=0.01, epochs=1, device=args.device, test_limit=1)


def method_kwargs(pairs) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for item in pairs or []:
        method, sep, kv = item.partition(":")
        if not sep or "=" not in kv:
            raise ValueError(f"--method-arg wants METHOD:KEY=VALUE, got {item!r}")
        out.setdefault(method, {}).update(parse_kv([kv]))
    return out


class Builder:
    """Builds trainers through ``Trainer.setup()``, loading the data once and sharing it."""

    def __init__(self, fields: dict, out: str, data_dir=None):
        self.fields, self.out, self.data_dir = fields, out, data_dir
        self.shared: dict | None = None

    def trainer(self, method: str, kwargs: dict | None = None):
        from ..train import TrainConfig, make_trainer

        config = TrainConfig(method=method, method_kwargs=kwargs or {}, **self.fields)
        trainer = make_trainer(config, out=self.out, data_dir=self.data_dir, progress=False, store=False)
        if self.shared is None:
            before = set(vars(trainer))
            trainer.load_data()
            self.shared = {k: v for k, v in vars(trainer).items() if k not in before}
        shared = self.shared
        trainer.load_data = lambda: vars(trainer).update(shared)
        trainer.setup()
        return trainer


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


# ---------------------------------------------------------------------------------- engine vs DataLoader
def dataloader_loop_epoch(model, optimizer, loader, device) -> None:
    import torch.nn.functional as F

    model.train()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def per_sample_dataset(train_data, padding: int, flip: bool):
    """The textbook pipeline: a Dataset whose ``__getitem__`` crops, flips and normalises one image."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import Dataset

    class PerSample(Dataset):
        def __init__(self):
            self.x, self.y = train_data.x, train_data.y
            self.mean = torch.tensor(train_data.mean).reshape(-1, 1, 1)
            self.std = torch.tensor(train_data.std).reshape(-1, 1, 1)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            img = self.x[i].float() / 255
            if padding:
                h, w = img.shape[-2:]
                oy, ox = torch.randint(0, 2 * padding + 1, (2,)).tolist()
                img = F.pad(img, (padding,) * 4)[:, oy:oy + h, ox:ox + w]
            if flip and torch.rand(()) < 0.5:
                img = img.flip(-1)
            return (img - self.mean) / self.std, self.y[i]

    return PerSample()


def engine_vs_dataloader(builder: Builder, epochs: int, workers: int) -> dict:
    """Epochs of the engine (ERM) and of a plain DataLoader loop, alternating; samples per second of each."""
    import torch
    from torch.utils.data import DataLoader

    trainer = builder.trainer("erm")
    c = trainer.config
    padding, flip = c.crop_padding, c.flip
    torch.manual_seed(0)
    model = trainer.build_model()
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    loader = DataLoader(per_sample_dataset(trainer.train_data, padding, flip), batch_size=c.batch_size,
                        shuffle=True, num_workers=workers, pin_memory=trainer.device.type == "cuda",
                        persistent_workers=workers > 0)
    dev = trainer.device
    trainer.train_epoch(0)  # warm-up
    dataloader_loop_epoch(model, optimizer, loader, dev)
    t_engine, t_loader = [], []
    for epoch in range(epochs):
        t_engine.append(timed(lambda: trainer.train_epoch(epoch + 1), dev))
        t_loader.append(timed(lambda: dataloader_loop_epoch(model, optimizer, loader, dev), dev))
    n = trainer.x_train.shape[0]
    engine_sps, loader_sps = n / statistics.median(t_engine), n / statistics.median(t_loader)
    return {"train_size": n, "batch_size": c.batch_size, "crop_padding": padding, "flip": flip,
            "workers": workers, "epochs": epochs, "engine_samples_per_second": engine_sps,
            "dataloader_samples_per_second": loader_sps, "engine_speedup": engine_sps / loader_sps}


# ---------------------------------------------------------------------------------------------------- run
def format_table(rows: dict) -> str:
    lines = [f"{'method':<18}{'step ms':>9}{'ERM ms':>9}{'x ERM':>8}{'target':>11}{'mix ms':>9}{'mix/ERM':>9}"
             f"{'memory MB':>11}{'x ERM':>7}"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"{name:<18}  skipped: {r['error']}")
            continue
        target = r.get("target")
        flag = "" if target is None else (" ok" if r["step_ratio"] <= target else " over")
        mem_ratio = f"{r['memory_ratio']:.2f}" if r["memory_ratio"] else "-"
        mix = f"{r['mix_ms']:.2f}" + ("" if r["mix_kind"] == "mix()" else "*")
        lines.append(f"{name:<18}{r['step_ms']:>9.2f}{r['erm_step_ms']:>9.2f}{r['step_ratio']:>8.3f}"
                     f"{(f'{target:.2f}' + flag) if target else '-':>11}{mix:>9}{100 * r['mix_share']:>8.1f}%"
                     f"{r['memory_mb']:>11.1f}{mem_ratio:>7}")
    return "\n".join(lines)


def run(args) -> int:
    import torch

    from ..registry import METHODS
    from ..train.engine import resolve_device

    apply_threads(args)
    fields = base_fields(args)
    names = [m.strip() for m in args.methods.split(",")] if args.methods else METHODS.names()
    names = [METHODS.canonical(m) for m in names]
    kwargs = method_kwargs(args.method_arg)
    device = resolve_device(args.device)
    out = tempfile.mkdtemp(prefix="mixlab-perf-")
    builder = Builder(fields, out, args.data_dir)
    erm = Bench(builder.trainer("erm"), fields["batch_size"])
    flags = [f for f in GPU_FLAGS if fields.get(f)]
    print(f"device {device}; {fields['model']} {fields['model_kwargs'] or ''} on {fields['dataset']}, batch "
          f"{fields['batch_size']}; flags: {', '.join(flags) or 'none (fp32)'}; median of {args.repeats} steps "
          f"after {args.warmup} warm-up, method and ERM alternating")
    rows = {}
    for name in names:
        try:
            bench = Bench(builder.trainer(name, kwargs.get(name)), fields["batch_size"])
            row = compare(bench, erm, args.repeats, args.warmup)
            row["target"] = target_for(name, row)
            rows[name] = row
            del bench
        except Exception as error:  # a method this dataset / model cannot run: report it, go on
            rows[name] = {"error": f"{type(error).__name__}: {error}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(format_table(rows))
    print("step = training_loss + backward + optimiser step; x ERM = median of paired step-time ratios; mix/ERM = "
          "mixing time / ERM step; * = forward time minus ERM forward (the method does not mix in input space); "
          "memory: " + ("peak allocated during a step beyond resident memory"
                                                 if device.type == "cuda" else
                                                 "tensors autograd keeps for backward (activation memory)"))
    report = {"device": str(device), "torch": torch.__version__, **{k: fields.get(k) for k in (
        "dataset", "model", "model_kwargs", "batch_size", *GPU_FLAGS)}, "repeats": args.repeats,
              "warmup": args.warmup, "methods": rows}
    if not args.no_ot:
        report["ot"] = ot_comparison(device)
        if "skipped" in report["ot"]:
            print(f"OT solvers: skipped ({report['ot']['skipped']})")
        for solver, r in report["ot"].items():
            if solver == "skipped":
                continue
            if isinstance(r, dict) and "speedup" in r:
                diff = {k: v for k, v in r.items() if "diff" in k}
                print(f"OT {solver}: mixlab {r['mixlab_ms']:.1f} ms, reference loop "
                      f"{r.get('per_sample_loop_ms', r.get('pot_loop_ms')):.1f} ms ({r['speedup']:.1f}x); {diff}")
            else:
                print(f"OT {solver}: skipped ({r.get('skipped')})")
    if args.engine_vs_dataloader:
        r = engine_vs_dataloader(builder, args.epochs_timed, args.workers)
        report["engine_vs_dataloader"] = r
        print(f"engine vs DataLoader ({r['train_size']} images, batch {r['batch_size']}, crop {r['crop_padding']}, "
              f"flip {r['flip']}, {r['workers']} workers, median of {r['epochs']} epochs): engine "
              f"{r['engine_samples_per_second']:.0f} samples/s, DataLoader loop "
              f"{r['dataloader_samples_per_second']:.0f} samples/s, engine {r['engine_speedup']:.2f}x")
    if args.json:
        print_json(report)
    return 0
