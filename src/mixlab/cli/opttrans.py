"""``mixlab opttrans``: build (resumable) or inspect the OptTransMix barycenter cache of a training set.

``mixlab opttrans build --protocol automix-mnist-sub-quick --seed 0 --out DIR`` writes the cache that
``mixlab train/bench --method opttransmix --out DIR`` then loads (same key: images, labels and settings).
"""
from __future__ import annotations

from .common import add_common, apply_threads, nonneg_int, parse_kv, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("opttrans", help="OptTransMix barycenter cache: build or show info")
    p.add_argument("action", choices=["build", "info"])
    p.add_argument("--protocol", default=None, help="take dataset / subset from a protocol")
    p.add_argument("--dataset", default=None)
    p.add_argument("--subset-per-class", type=positive_int, default=None)
    p.add_argument("--seed", type=nonneg_int, default=0, help="run seed (selects the subset, as in mixlab train)")
    p.add_argument("--method", default="opttransmix", help="opttransmix, opttransmix+mixup or opttransmix+bc")
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE", help="e.g. reg=0.004 per_image=10")
    p.add_argument("--no-progress", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..methods.opttransmix import OptTransMix, cache_key, load_or_build_cache
    from ..registry import METHODS
    from ..train import TrainConfig, make_trainer

    apply_threads(args)
    fields = {}
    if args.protocol:
        from ..protocols import get_protocol

        fields = dict(get_protocol(args.protocol).config)
    for name in ("dataset", "subset_per_class"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    fields.setdefault("dataset", "digits")
    fields = {k: v for k, v in fields.items() if k in ("dataset", "subset_per_class", "test_limit")}
    config = TrainConfig(method=args.method, seed=args.seed, method_kwargs=parse_kv(args.method_arg), **fields)
    trainer = make_trainer(config, out=args.out, data_dir=args.data_dir, store=False)
    trainer.load_data()
    method = METHODS.create(args.method, num_classes=trainer.num_classes, **config.method_kwargs)
    if not isinstance(method, OptTransMix):
        raise ValueError(f"{args.method} is not an OptTransMix method")
    from pathlib import Path

    root = Path(method.cache_dir) if method.cache_dir else Path(args.out) / "cache" / "opttransmix"
    x, y = trainer.train_data.x, trainer.train_data.y
    folder = root / cache_key(x, y, method.settings())
    if args.action == "info":
        meta = folder / "meta.json"
        print(meta.read_text() if meta.exists() else f"{folder}: not built (or unfinished)")
        return 0
    cache = load_or_build_cache(method, x, y, root, progress=False if args.no_progress else None)
    print(f"{cache['x'].shape[0]} barycenters of {len(x)} training images in {cache['folder']}")
    return 0
