"""AMP's training-step time relative to its plain mixer on the same batches (two passes by design).

    PYTHONPATH=src python3 benchmarks/amp_step_time.py [--model kim-cnn] [--steps 30] [--threads 1]

Times forward + backward + Adam step of each method on identical TREC-sized batches (batch 50, length 20,
vocabulary 8,000) and prints the ratio of every method to the baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch

from mixlab.methods import METHODS
from mixlab.models import MODELS

PAIRS = (("wordmixup", "amp+wordmixup"), ("sentmixup", "amp+sentmixup"))


def time_method(name: str, model_name: str, model_kwargs: dict, batches, steps: int, classes: int) -> float:
    torch.manual_seed(0)
    model = MODELS.create(model_name, num_classes=classes, vocab_size=8000, **model_kwargs)
    method = METHODS.create(name, num_classes=classes, seed=0, check_inputs=False)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    model.train()
    times = []
    for i in range(steps + 3):
        x, t = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = method.training_loss(model, x, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]  # median: robust to other jobs on a shared CPU


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="kim-cnn")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--length", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = {k: int(v) for k, v in (a.split("=") for a in args.model_arg)}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(2, 8000, (50, args.length), generator=g),
                torch.nn.functional.one_hot(torch.randint(0, 6, (50,), generator=g), 6).float()) for _ in range(4)]
    base = time_method("erm", args.model, kwargs, batches, args.steps, 6)
    print(f"{args.model} {kwargs}, batch 50 x {args.length} tokens, {args.threads} thread(s), median of {args.steps} steps")
    print(f"{'method':<16}{'ms/step':>9}{'vs erm':>8}{'vs plain':>10}")
    print(f"{'erm':<16}{1000 * base:>9.1f}{1.0:>8.2f}")
    for plain, amp in PAIRS:
        tp = time_method(plain, args.model, kwargs, batches, args.steps, 6)
        ta = time_method(amp, args.model, kwargs, batches, args.steps, 6)
        print(f"{plain:<16}{1000 * tp:>9.1f}{tp / base:>8.2f}")
        print(f"{amp:<16}{1000 * ta:>9.1f}{ta / base:>8.2f}{ta / tp:>10.2f}")


if __name__ == "__main__":
    main()
