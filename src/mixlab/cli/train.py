"""``mixlab train``: one run."""
from __future__ import annotations

import argparse

from .common import add_common, apply_threads, parse_kv, print_json

GPU_FLAGS = ("channels_last", "bf16", "compile")


def add_gpu_flags(p) -> None:
    """The memory-format and GPU-path switches (they work on CPU too). Multi-GPU: launch with torchrun."""
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on for image datasets, where its convolutions are faster)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast for forward passes")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model's stages")

JSON_KEYS = ("run_id", "method", "dataset", "model", "seed", "epochs", "test_error", "test_top5_error",
             "train_seconds", "samples_per_second", "train_size", "test_set", "device", "protocol")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model with one method")
    p.add_argument("--protocol", default=None, help="start from a named protocol's settings (see mixlab bench)")
    p.add_argument("--dataset", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--method", default="erm")
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option (repeatable)")
    p.add_argument("--mixer-from", default=None, metavar="PATH",
                   help="a searched mixing module (mixlab transformmix search); same as --method-arg mixer_from=PATH")
    p.add_argument("--subset-per-class", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", choices=["multistep", "cosine", "constant"], default=None)
    p.add_argument("--milestones", type=lambda s: tuple(int(v) for v in s.split(",") if v), default=None)
    p.add_argument("--crop-padding", type=int, default=None)
    p.add_argument("--flip", action="store_true", default=None)
    p.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images only")
    p.add_argument("--holdout-per-class", type=int, default=None, metavar="N",
                   help="evaluate on N images per class of the training split that the run does not train on, "
                        "instead of the test set (for choosing hyper-parameters)")
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm (the AMP authors use 10)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps (text protocols)")
    p.add_argument("--eval-steps", type=int, default=None, help="evaluate dev and test every N steps (text)")
    p.add_argument("--data-arg", action="append", metavar="KEY=VALUE",
                   help="dataset option, e.g. fold=3, dev_fraction=0.1, ratio=0.03 (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    add_gpu_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--no-progress", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def build_config(args):
    from ..protocols import get_protocol
    from ..train import TrainConfig

    fields = dict(get_protocol(args.protocol).config) if args.protocol else {}
    method_kwargs = {}
    if args.protocol:
        method_kwargs.update(get_protocol(args.protocol).method_kwargs.get(args.method, {}))
        fields["protocol"] = args.protocol
    for name in ("dataset", "model", "subset_per_class", "epochs", "batch_size", "lr", "weight_decay", "schedule",
                 "milestones", "crop_padding", "flip", "test_limit", "holdout_per_class", "eval_every", "grad_clip",
                 "max_steps", "eval_steps", *GPU_FLAGS):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    fields.setdefault("dataset", "digits")
    fields.setdefault("model", "cnn11")
    method_kwargs.update(parse_kv(args.method_arg))
    if getattr(args, "mixer_from", None):
        method_kwargs["mixer_from"] = args.mixer_from
    model_kwargs = {**fields.pop("model_kwargs", {}), **parse_kv(args.model_arg)}
    if args.data_arg:
        fields["data_kwargs"] = {**fields.get("data_kwargs", {}), **parse_kv(args.data_arg)}
    return TrainConfig(method=args.method, seed=args.seed, device=args.device, method_kwargs=method_kwargs,
                       model_kwargs=model_kwargs, **fields)


def run(args) -> int:
    from ..train import make_trainer

    apply_threads(args)
    config = build_config(args)
    trainer = make_trainer(config, out=args.out, data_dir=args.data_dir,
                           progress=False if args.no_progress else None)
    result = trainer.run(resume=args.resume)
    if not trainer.is_main:  # under torchrun, rank 0 reports
        return 0
    top5 = result["test_top5_error"]
    print(f"{result['method']} on {result['dataset']} ({result['model']}, seed {result['seed']}): "
          f"test error {result['test_error']:.2f}%" + (f", top-5 {top5:.2f}%" if top5 is not None else "")
          + f" on {result['test_set']}; {result['train_seconds']:.1f} s training")
    if args.json:
        print_json({k: result.get(k) for k in JSON_KEYS})
    return 0
