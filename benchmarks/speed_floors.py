"""Where the time of AMP, TransformMix and MultiMix steps goes, phase by phase, against ERM's step (issue 20).

    PYTHONPATH=src python3 benchmarks/speed_floors.py [--protocol automix-mnist-sub-quick] [--data-dir DATA]
        [--repeats 9] [--threads 1]

Each method is built as ``mixlab perf`` builds it (the engine's ``setup``, the protocol's model, data, batch and
memory format) and one fixed batch is stepped on. Phases are timed separately, interleaved over ``--repeats``
rounds, medians printed (ms), and each method's floor: the phases its definition needs, over an ERM step.

* AMP (on input mixup): first forward F1 (lambda requiring grad), the gradient of the batch-mean loss w.r.t.
  lambda G (input gradients through the whole network, no weight gradients), second forward F2, the backward of
  the per-sample larger loss through both passes (BN couples the samples, so both graphs are traversed in full),
  optimiser step. Floor over plain mixup: ``(F1 + G + F2 + B1+2) / (F + B)``.
* TransformMix: the frozen teacher's forward and (Grad-)CAM, the frozen mixing module (STN, mask network, warps),
  the task network's step on the mixed batch. Floor over ERM: ``1 + (teacher + module) / ERM step``.
* MultiMix (n as given, default 5000): the Dirichlet draw of Lambda (on the CPU, serial in torch's gamma sampler)
  and the rest of the step.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import torch


def median_ms(values) -> float:
    return 1000.0 * statistics.median(values)


def main() -> None:
    from mixlab.bench.perf import Bench, Builder
    from mixlab.cli.perf import base_fields
    from mixlab.cli.train import GPU_FLAGS
    from mixlab.methods.base import soft_cross_entropy
    from mixlab.methods.multimix import dirichlet_weights
    from mixlab.methods.transformmix import class_activation_maps

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocol", default="automix-mnist-sub-quick")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--multimix-n", type=int, default=5000)
    p.add_argument("--no-channels-last", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ns = argparse.Namespace(protocol=args.protocol, dataset=None, model=None, subset_per_class=None, batch_size=None,
                            model_arg=None, device="cpu", threads=args.threads, **{f: None for f in GPU_FLAGS})
    if args.no_channels_last:
        ns.channels_last = False
    fields = base_fields(ns)
    builder = Builder(fields, "/tmp/mixlab-speed-floors", args.data_dir)
    with contextlib.redirect_stderr(io.StringIO()):  # the teacher's and search's progress lines
        benches = {name: Bench(builder.trainer(name, kw), fields["batch_size"]) for name, kw in (
            ("erm", {}), ("mixup", {}), ("amp+mixup", {}), ("transformmix", {"search_epochs": 1}),
            ("multimix", {"n": args.multimix_n}))}
    print(f"{fields['model']} {fields['model_kwargs']} on {fields['dataset']}, batch {fields['batch_size']}, "
          f"channels-last {benches['erm'].trainer.config.channels_last}, {args.threads} thread(s), "
          f"median of {args.repeats}")
    times: dict[str, list[float]] = {}

    def timed(key, fn):
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)
        return out

    erm, amp_b, tm_b, mm_b = benches["erm"], benches["amp+mixup"], benches["transformmix"], benches["multimix"]
    amp, tm, mm = amp_b.trainer.method, tm_b.trainer.method, mm_b.trainer.method
    x, t = erm.x, erm.t
    for b in benches.values():  # warm-up
        b.step()
    for _ in range(args.repeats):
        # ERM and mixup: forward, backward + step
        for name in ("erm", "mixup"):
            tr = benches[name].trainer
            loss = timed(f"{name} forward", benches[name].forward)
            timed(f"{name} backward+step", lambda: tr.optimizer_step(loss))
        # AMP, phase by phase (the same operations as AMP.training_loss, then the engine's step)
        tr = amp_b.trainer
        lam, perm, forward = amp.draw(tr.model, x, t)
        lam_in = lam.clone().requires_grad_(True)
        logits, t_mix = timed("amp F1", lambda: forward(lam_in))
        loss_pre = soft_cross_entropy(logits, t_mix, reduction="none")
        (grad,) = timed("amp G", lambda: torch.autograd.grad(loss_pre.mean(), lam_in, retain_graph=True))
        logits_adv, _ = timed("amp F2", lambda: forward((lam + amp.epsilon * grad).detach()))
        loss_cur = soft_cross_entropy(logits_adv, t_mix, reduction="none")
        mask = ((loss_cur - loss_pre).detach() > 0).to(loss_cur.dtype)
        loss = (loss_cur * mask + loss_pre * (1 - mask)).mean()
        timed("amp B1+2+step", lambda: tr.optimizer_step(loss))
        timed("amp step", amp_b.step)
        # TransformMix: teacher, module, task step
        timed("tm teacher+cam", lambda: class_activation_maps(tm.teacher, x, t.argmax(1)))
        cams = class_activation_maps(tm.teacher, x, t.argmax(1))
        lam_k, index, z = tm.sample(x.shape[0], x.device)
        x01 = tm.to_pixels(x)
        with torch.no_grad():
            timed("tm module", lambda: tm.module(x01[index].transpose(0, 1), cams[index].transpose(0, 1), lam_k, z))
        timed("tm step", tm_b.step)
        # MultiMix: the Dirichlet draw alone, then the whole step
        timed("mm Dirichlet", lambda: dirichlet_weights(mm.alpha, x.shape[0], mm.n, mm.generator, support=mm.m))
        timed("mm step", mm_b.step)
        timed("erm step", erm.step)
    ms = {k: median_ms(v) for k, v in times.items()}
    for k, v in ms.items():
        print(f"  {k:<22}{v:9.2f} ms")
    erm_step = ms["erm forward"] + ms["erm backward+step"]
    mixup_step = ms["mixup forward"] + ms["mixup backward+step"]
    amp_parts = ms["amp F1"] + ms["amp G"] + ms["amp F2"] + ms["amp B1+2+step"]
    print(f"AMP: F1 + G + F2 + B = {amp_parts:.1f} ms over mixup's F + B = {mixup_step:.1f} ms: "
          f"{amp_parts / mixup_step:.2f}x (G alone {ms['amp G'] / mixup_step:.2f} of a mixup step; whole AMP step "
          f"{ms['amp step'] / mixup_step:.2f}x)")
    tm_mix = ms["tm teacher+cam"] + ms["tm module"]
    print(f"TransformMix: teacher + CAM {ms['tm teacher+cam']:.1f} ms, module {ms['tm module']:.1f} ms = "
          f"{tm_mix / erm_step:.2f} of an ERM step ({erm_step:.1f} ms): floor {1 + tm_mix / erm_step:.2f}x "
          f"(whole step {ms['tm step'] / ms['erm step']:.2f}x)")
    print(f"MultiMix n={mm.n}: Dirichlet draw {ms['mm Dirichlet']:.1f} ms = {ms['mm Dirichlet'] / erm_step:.2f} of "
          f"an ERM step; whole step {ms['mm step'] / ms['erm step']:.2f}x")


if __name__ == "__main__":
    main()
