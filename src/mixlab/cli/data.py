"""``mixlab data``: list and verify datasets under the data root."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools")
    p.add_argument("action", choices=["verify", "list"], help="verify: check every dataset found under the root")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data import DATASETS, data_root
    from ..data.files import DatasetFileError

    root = data_root(args.data_dir)
    print(f"data root: {root}")
    failures = 0
    for name in DATASETS.names():
        if args.action == "list":
            print(f"  {name:<16} {DATASETS.help(name)}")
            continue
        if name != "digits" and not (root / name).exists():
            print(f"  {name:<16} not present")
            continue
        for split in ("train", "test"):
            try:
                d = DATASETS.get(name)(split=split, root=args.data_dir, download=False)
                print(f"  {name:<16} {split:<6} ok: {len(d)} examples, {d.note}")
            except ValueError:
                pass  # split not offered by this dataset
            except DatasetFileError as error:
                failures += 1
                print(f"  {name:<16} {split:<6} FAILED: {error}")
    return 1 if failures else 0
