"""``mixlab show``: a PNG of what a method does to a few pairs.

Input-space mixers draw (input, partner, mixed, soft label). A method may instead define
``show(batch_x01, targets, classes, path, context)`` to draw its own picture (e.g. a transport plan).
"""
from __future__ import annotations

from .common import nonneg_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="write a PNG grid of mixed samples")
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--pairs", type=positive_int, default=6)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", default="mixlab-show.png", help="PNG path")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..data.augment import to_float
    from ..methods.base import InputMixer, as_targets
    from ..registry import METHODS
    from ..viz import mix_grid
    from .common import parse_kv

    data = load_dataset(args.dataset, "test", args.data_dir)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(data), generator=g)[: max(2 * args.pairs, 2)]
    x = to_float(data.x[idx])
    method = METHODS.create(args.method, num_classes=data.num_classes, seed=args.seed, **parse_kv(args.method_arg))
    t = as_targets(data.y[idx], data.num_classes, x.dtype)
    if hasattr(method, "show"):
        path = method.show(x, t, data.classes, args.out, {"dataset": data, "data_dir": args.data_dir})
    elif isinstance(method, InputMixer):
        with torch.no_grad():
            x_mix, t_mix = method(x, t)
        index = method.last.index if method.last is not None else torch.arange(len(x))
        n = args.pairs
        path = mix_grid(x[:n], x[index][:n], x_mix[:n].clamp(0, 1), t[:n], t[index][:n], t_mix[:n], data.classes,
                        args.out, title=f"{args.method} on {args.dataset}")
    else:
        raise ValueError(f"{args.method} mixes inside the network and defines no picture of its own")
    print(f"wrote {path}")
    return 0
