"""``mixlab show``: a PNG of what a method does to a few pairs.

Input-space mixers draw (input, partner, mixed, soft label). A method may instead define
``show(batch_x01, targets, classes, path, context)`` to draw its own picture (e.g. a transport plan).
Text datasets: the text mixers' pairs as text (the two sentences, lambda, the soft label, where the mix happens).
"""
from __future__ import annotations

from pathlib import Path

from .common import nonneg_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("show", help="write a PNG grid of mixed samples")
    p.add_argument("--method", required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--pairs", type=positive_int, default=6)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE")
    p.add_argument("--out", default="mixlab-show.png", help="PNG path (text datasets: the same name with .txt)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--debug", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..data import load_dataset
    from ..data.augment import to_float
    from ..data.text import TextData
    from ..methods.base import InputMixer, as_targets
    from ..registry import METHODS
    from ..viz import mix_grid
    from .common import parse_kv

    options = parse_kv(args.method_arg)
    METHODS.check_options(args.method, options)  # before loading any data
    data = load_dataset(args.dataset, "test", args.data_dir)
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(data), generator=g)[: max(2 * args.pairs, 2)]
    method = METHODS.create(args.method, num_classes=data.num_classes, seed=args.seed, **options)
    if isinstance(data, TextData):
        path = show_text(method, data, idx, args.pairs, args.out, f"{args.method} on {args.dataset}")
        print(f"wrote {path}")
        return 0
    x = to_float(data.x[idx])
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


TEXT_MIXERS = "wordmixup (word embeddings), sentmixup (sentence vector), amp+wordmixup or amp+sentmixup"


def show_text(method, data, idx, pairs: int, out: str, title: str) -> Path:
    """Text datasets: the two sentences, lambda and the soft label of ``pairs`` pairs, printed and written to
    ``out`` (a ``.png`` name becomes ``.txt``). Text mixers mix hidden states, so the sentences are shown as is and
    the header says where the mix happens."""
    import torch

    from ..methods.base import as_targets, interpolate
    from ..methods.textmix import StageMixup
    from ..viz import mix_text

    inner = getattr(method, "inner", method)
    if not isinstance(inner, StageMixup):
        raise ValueError(f"{method.name} does not mix text ({data.name} is a text dataset: its inputs are token ids, "
                         f"and {method.name} mixes {'nothing' if method.name == 'erm' else 'images or image features'}); use "
                         f"{TEXT_MIXERS}")
    lam, perm = inner.sample(len(idx))
    lam = lam.expand(len(idx))
    t = as_targets(data.y[idx], data.num_classes, torch.float32)
    t_mix = interpolate(t, t[perm], lam)
    text = [data.text[i] for i in idx.tolist()]
    n = min(pairs, len(idx))
    head = f"{title}: mixes {inner.site()}; the sentences below are the inputs of the pair"
    if inner is not method:  # AMP
        head += (f"; AMP moves each lambda by one adversarial step (epsilon {method.epsilon:g}) while training, "
                 f"shown: the lambda drawn before that step")
    rendering = mix_text(text[:n], [text[j] for j in perm[:n].tolist()], t[:n], t[perm][:n], lam[:n], t_mix[:n],
                         data.classes, head)
    print(rendering)
    path = Path(out)
    path = path.with_suffix(".txt") if path.suffix.lower() == ".png" else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rendering + "\n")
    return path
