"""``mixlab transformmix search``: the search stage of TransformMix, saved as a module file.

Trains (or reuses) a teacher on the data, then the mixing module against it; both stages are resumable (run the
same command again) and cached under ``--out``. Then train a task network with the frozen module::

    mixlab transformmix search --protocol automix-fmnist-sub-quick --save fmnist-module.pt
    mixlab train --protocol automix-mnist-sub-quick --method transformmix --mixer-from fmnist-module.pt
"""
from __future__ import annotations

import argparse

from .common import add_common, apply_threads, nonneg_float, nonneg_int, number, parse_kv, positive_float, positive_int


def temperature(text: str) -> float | str:
    """``auto`` or a number > 0 (argparse type of ``--teacher-temperature``)."""
    if text == "auto":
        return text
    try:
        return positive_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number > 0; got {text!r}") from None


def add_parser(sub) -> None:
    p = sub.add_parser("transformmix", help="TransformMix stages (search a mixing module)")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    s = stages.add_parser("search", help="train a teacher, then search the mixing module against it")
    s.add_argument("--save", required=True, metavar="PATH", help="where to write the module file (.pt)")
    g = s.add_argument_group("data and teacher (as for mixlab train)")
    g.add_argument("--protocol", default=None, help="take dataset, model and schedule from a protocol")
    g.add_argument("--dataset", default=None)
    g.add_argument("--model", default=None, help="teacher model")
    g.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    g.add_argument("--subset-per-class", type=positive_int, default=None)
    g.add_argument("--teacher-epochs", type=positive_int, default=None, help="default: the protocol's epochs")
    g.add_argument("--seed", type=nonneg_int, default=0)
    m = s.add_argument_group("mixing module and search (paper: SGD lr 5e-4, wd 0.01, 100 epochs, batch 128)")
    m.add_argument("--k", type=number(2, integer=True), default=2, help="images per mixed sample")
    m.add_argument("--alpha", type=positive_float, default=1.0, help="Dirichlet concentration")
    m.add_argument("--ablation", default="none", choices=["none", "stn-only", "mpn-only", "softmax-cam"])
    m.add_argument("--image-size", type=positive_int, default=None, help="module input size (default: the data's)")
    m.add_argument("--mask-layers", type=positive_int, default=None,
                   help="mask network conv layers (paper 3; Fig. 7a: 2-4)")
    m.add_argument("--mask-channels", type=positive_int, default=None, help="their channels (paper 32; Fig. 7b: 8-64)")
    m.add_argument("--mask-kernel", type=positive_int, default=None, help="their kernel size (paper 3; Fig. 7c: 3, 5, 7)")
    m.add_argument("--epochs", type=positive_int, default=100)
    m.add_argument("--lr", type=positive_float, default=5e-4)
    m.add_argument("--weight-decay", type=nonneg_float, default=0.01)
    m.add_argument("--momentum", type=number(0, 1, hi_open=True), default=0.9)
    m.add_argument("--batch-size", type=positive_int, default=128)
    m.add_argument("--teacher-temperature", default=None, type=temperature,
                   help="T in CE(softmax(teacher / T), y'): a number (1 = the paper's loss) or 'auto' (fitted on "
                        "input-mixup images); default: the method's")
    m.add_argument("--lambda-prior", default=None, choices=["true", "false"],
                   help="start the mask network from input mixup's masks m_i = lambda_i; default: the method's")
    m.add_argument("--zero-mask-head", default=None, choices=["true", "false"],
                   help="zero the mask network's last layer at initialisation; default: the method's")
    s.add_argument("--no-progress", action="store_true")
    add_common(s, out_default="mixlab-out")
    s.set_defaults(func=run_search)


def search_config(args):
    """The TrainConfig whose ``setup`` runs the search (its task fields define the teacher)."""
    from ..protocols import get_protocol
    from ..train import TrainConfig

    fields = dict(get_protocol(args.protocol).config) if args.protocol else {"dataset": "digits", "model": "cnn11"}
    for name in ("dataset", "model", "subset_per_class"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    fields["model_kwargs"] = {**fields.get("model_kwargs", {}), **parse_kv(args.model_arg)}
    method_kwargs = {"k": args.k, "alpha": args.alpha, "ablation": args.ablation, "image_size": args.image_size,
                     "teacher_epochs": args.teacher_epochs, "search_epochs": args.epochs, "search_lr": args.lr,
                     "search_weight_decay": args.weight_decay, "search_momentum": args.momentum,
                     "search_batch_size": args.batch_size}
    if args.teacher_temperature is not None:
        method_kwargs["teacher_temperature"] = args.teacher_temperature
    for name in ("mask_layers", "mask_channels", "mask_kernel"):
        if getattr(args, name) is not None:
            method_kwargs[name] = getattr(args, name)
    for name in ("lambda_prior", "zero_mask_head"):
        if getattr(args, name) is not None:
            method_kwargs[name] = getattr(args, name) == "true"
    return TrainConfig(method="transformmix", seed=args.seed, device=args.device, method_kwargs=method_kwargs,
                       **fields)


def run_search(args) -> int:
    import shutil
    from pathlib import Path

    from ..train import make_trainer

    apply_threads(args)
    trainer = make_trainer(search_config(args), out=args.out, data_dir=args.data_dir,
                           progress=False if args.no_progress else None)
    trainer.setup()  # TransformMix.setup: teacher (cached run), then the search (cached module)
    method = trainer.method
    source = method.module_source
    Path(args.save).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, args.save)
    meta = method.module.read(args.save)["meta"]
    losses = meta.get("losses", [])
    print(f"wrote {args.save}: k={method.k}, ablation {method.ablation}, searched on {meta.get('dataset')} "
          f"(teacher CE on mixed images {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} epochs, "
          f"tau {float(method.module.tau):.3f}, teacher temperature {meta.get('teacher_temperature') or 1.0:.3g})")
    return 0
