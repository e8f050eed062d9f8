"""``mixlab train``: one run."""
from __future__ import annotations

import argparse

from .common import (add_common, apply_threads, int_list, nonneg_float, nonneg_int, parse_kv, positive_float,
                     positive_int, print_json)

GPU_FLAGS = ("channels_last", "bf16", "compile")


def add_gpu_flags(p) -> None:
    """The memory-format and GPU-path switches (they work on CPU too). Multi-GPU: launch with torchrun."""
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on for image datasets, where its convolutions are faster)")
    p.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast for forward passes (default off)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model's stages (default off)")

JSON_KEYS = ("run_id", "status", "method", "dataset", "model", "seed", "epochs", "test_error", "test_top5_error",
             "train_seconds", "samples_per_second", "train_size", "test_set", "device", "protocol",
             "diverged_epoch", "diverged_step")

#: exit status of ``mixlab train`` for a run that diverged (stored with status "diverged"; no test error)
EXIT_DIVERGED = 3


def add_parser(sub) -> None:
    from ..train import TrainConfig

    d = TrainConfig()

    def default(field: str) -> str:  # "the protocol's, else <TrainConfig's default>"
        value = getattr(d, field)
        value = ",".join(map(str, value)) if isinstance(value, tuple) else value
        return f"(default: the protocol's, else {value})"

    p = sub.add_parser("train", help="train one model with one method",
                       description="Train one run and store it in OUT/results.db. Settings left out come from "
                                   "--protocol if given, else from the defaults shown. A run whose training loss "
                                   "becomes NaN / inf stops, is stored with status 'diverged' and the command "
                                   f"exits with status {EXIT_DIVERGED}.")
    p.add_argument("--protocol", default=None, help="start from a named protocol's settings (mixlab bench --list); "
                                                    "default: none")
    p.add_argument("--dataset", default=None, help=f"dataset (mixlab methods lists them) {default('dataset')}")
    p.add_argument("--model", default=None, help=f"model (mixlab methods lists them) {default('model')}")
    p.add_argument("--method", default="erm", help="mixing method (mixlab methods lists them; default: erm)")
    p.add_argument("--method-arg", action="append", metavar="KEY=VALUE",
                   help="method option (repeatable; default: the method's own, plus the protocol's)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="model option, e.g. width=0.25 (repeatable; default: the protocol's, else the model's own)")
    p.add_argument("--mixer-from", default=None, metavar="PATH",
                   help="a searched mixing module (mixlab transformmix search); same as --method-arg mixer_from=PATH "
                        "(default: none)")
    p.add_argument("--subset-per-class", type=positive_int, default=None, metavar="N",
                   help="train on N images per class, drawn with the seed (default: the protocol's, else all)")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"training epochs {default('epochs')}")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"batch size {default('batch_size')}")
    p.add_argument("--lr", type=positive_float, default=None, help=f"learning rate {default('lr')}")
    p.add_argument("--weight-decay", type=nonneg_float, default=None, help=f"L2 weight decay {default('weight_decay')}")
    p.add_argument("--schedule", choices=["multistep", "cosine", "constant"], default=None,
                   help=f"learning-rate schedule {default('schedule')}")
    p.add_argument("--milestones", type=int_list(1), default=None,
                   metavar="E1,E2", help=f"epochs where multistep multiplies the lr by {d.gamma} "
                                         f"{default('milestones')}")
    p.add_argument("--crop-padding", type=nonneg_int, default=None, metavar="P",
                   help=f"random crop after zero-padding by P pixels {default('crop_padding')}")
    p.add_argument("--flip", action="store_true", default=None,
                   help=f"random horizontal flips {default('flip')}")
    p.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test images only (default: the protocol's, else all)")
    p.add_argument("--holdout-per-class", type=positive_int, default=None, metavar="N",
                   help="evaluate on N images per class of the training split that the run does not train on, "
                        "instead of the test set (for choosing hyper-parameters; default: off)")
    p.add_argument("--eval-every", type=nonneg_int, default=None, metavar="N",
                   help=f"also evaluate every N epochs (0: only at the end) {default('eval_every')}")
    p.add_argument("--grad-clip", type=positive_float, default=None,
                   help="clip the gradient norm (the AMP authors use 10; default: the protocol's, else no clipping)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after N optimiser steps (text protocols; default: the protocol's, else all epochs)")
    p.add_argument("--eval-steps", type=nonneg_int, default=None,
                   help=f"evaluate dev and test every N steps (text) {default('eval_steps')}")
    p.add_argument("--data-arg", action="append", metavar="KEY=VALUE",
                   help="dataset option, e.g. fold=3, dev_fraction=0.1, ratio=0.03 (repeatable; default: the "
                        "protocol's)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of every random stream of the run (default: 0)")
    add_gpu_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the run's last checkpoint (default: train from the start)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line (default: off)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar or progress lines (default: a bar on a terminal, a line every 30 s "
                        "otherwise)")
    add_common(p, training=True)
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
                       model_kwargs=model_kwargs, threads=args.threads, **fields)


def run(args) -> int:
    from ..train import make_trainer

    apply_threads(args)
    config = build_config(args)
    trainer = make_trainer(config, out=args.out, data_dir=args.data_dir,
                           progress=False if args.no_progress else None)
    result = trainer.run(resume=args.resume)
    if not trainer.is_main:  # under torchrun, rank 0 reports
        return 0
    if result["status"] == "diverged":
        print(f"{result['method']} on {result['dataset']} ({result['model']}, seed {result['seed']}): DIVERGED "
              f"(training loss not finite) at epoch {result['diverged_epoch']}, step {result['diverged_step']}; "
              f"stored with status 'diverged' and no test error")
        if args.json:
            print_json({k: result.get(k) for k in JSON_KEYS})
        return EXIT_DIVERGED
    top5 = result["test_top5_error"]
    print(f"{result['method']} on {result['dataset']} ({result['model']}, seed {result['seed']}): "
          f"test error {result['test_error']:.2f}%" + (f", top-5 {top5:.2f}%" if top5 is not None else "")
          + f" on {result['test_set']}; {result['train_seconds']:.1f} s training")
    if args.json:
        print_json({k: result.get(k) for k in JSON_KEYS})
    return 0
