"""Seconds to mix one batch with PuzzleMix and Co-Mixup, the saliency forward-backward included.

    PYTHONPATH=src python3 benchmarks/saliency_mix_time.py [--batch 128] [--size 32] [--model preactresnet18]
                                                           [--repeats 5] [--threads 1] [--device cpu]

For each method: the saliency (one forward-backward of the model with respect to the input, as in
``training_loss``), the mixing given that saliency (graph cuts, transport, mixing), and their sum; PuzzleMix also per
block count (it draws 2, 4, 8 or 16 blocks per side per batch). Beside them, one plain ERM training step
(forward, backward) of the same model on the same batch, measured in the same run. Random images and an untrained
model: the time of a cut depends a little on the costs, so treat the mixing times as indicative. Each line gives the
median wall-clock seconds and, in brackets, the median CPU seconds of this process (on a shared machine the CPU
time of a one-thread run is the better estimate of the time on an idle core).
The TransformMix paper (Table 5) reports 0.163 s for PuzzleMix on a batch of 128 on an RTX 3090 GPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixlab.methods import METHODS
from mixlab.methods.base import soft_cross_entropy
from mixlab.methods.saliency import input_saliency
from mixlab.models import MODELS
from mixlab.ot import graphcut


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def fmt(t: tuple[float, float]) -> str:
    return f"{t[0]:>8.3f} s ({t[1]:.3f} s CPU)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--model", default="preactresnet18")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, args.channels, args.size, args.size, generator=gen).to(device)
    t = torch.nn.functional.one_hot(torch.randint(0, 10, (args.batch,), generator=gen), 10).float().to(device)
    torch.manual_seed(0)
    model = MODELS.create(args.model, num_classes=10, in_channels=args.channels, image_size=args.size).to(device)
    model.train()

    def erm_step():
        model.zero_grad(set_to_none=True)
        soft_cross_entropy(model(x), t).backward()

    print(f"batch {args.batch} x {args.channels}x{args.size}x{args.size}, {args.model}, device {device}, "
          f"{args.threads} thread(s), graph cuts: {graphcut.status()}; median of {args.repeats}")
    erm = timed(erm_step, args.repeats, device)
    print(f"{'ERM training step (forward + backward)':<46}{fmt(erm)}")
    saliency = {}
    for name, eval_mode in (("puzzlemix", True), ("comixup", False)):
        s_time = timed(lambda: saliency.__setitem__(name, input_saliency(model, x, t, soft_cross_entropy,
                                                                          eval_mode=eval_mode)[0]),
                       args.repeats, device)
        print(f"{name + ' saliency (forward-backward)':<46}{fmt(s_time)}")
        variants = [("", {})]
        if name == "puzzlemix":
            variants += [(f" ({n}x{n} blocks)", {"block_nums": (n,)}) for n in (2, 4, 8, 16) if args.size % n == 0]
        for label, kwargs in variants:
            method = METHODS.create(name, num_classes=10, seed=0, **kwargs).to(device)
            with torch.no_grad():
                mix = timed(lambda: method.mix_with_saliency(x, t, saliency[name]), args.repeats, device)
            both = (s_time[0] + mix[0], s_time[1] + mix[1])
            total = (f"   total {fmt(both)} = {both[0] / erm[0]:.2f} ERM steps ({both[1] / erm[1]:.2f} by CPU)"
                     if not label else "")
            print(f"{name + ' mixing' + label:<46}{fmt(mix)}{total}")


if __name__ == "__main__":
    main()
