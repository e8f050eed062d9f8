"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2`` (gloo): writes per-rank results to OUT.

1. Train several methods (input and feature mixers) for one epoch with the real Trainer; save each rank's
   parameters.
2. ``gather_global`` inside a DDP module: a minimal embedding interpolation over the global batch; save what
   each rank saw and its DDP-averaged gradient, plus the single-process reference gradient.
3. Resume under DDP: an interrupted run resumed from its checkpoint vs an uninterrupted one.
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mixlab.registry import METHODS
from mixlab.train import TrainConfig, Trainer
from mixlab.methods import soft_cross_entropy
from mixlab.distributed import TrainStep, gather_global, get_rank, get_world_size, local_rows

torch.set_num_threads(1)
OUT = Path(sys.argv[1])
SMALL = dict(dataset="digits", model="cnn11", model_kwargs={"width": 0.25}, batch_size=32, lr=0.05, epochs=1)


def save(obj, name):
    torch.save(obj, OUT / f"{name}_r{get_rank()}.pt")


# ---------------------------------------------------------------------------------------------- 1. methods
# one of each kind (input, feature, OT, learned): a representative set, kept small so the test stays fast
methods = ["erm", "mixup", "cutmix", "bc", "manifold"] + [m for m in ("alignmix", "multimix", "automix-zhu")
                                                         if m in METHODS]
for method in methods:
    trainer = Trainer(TrainConfig(method=method, **SMALL), out=OUT / "methods", progress=False)
    result = trainer.run()
    init = Trainer(TrainConfig(method=method, **SMALL), out=OUT / "unused", progress=False, store=False)
    init.setup()  # the initial parameters (identical on every rank: same init seed)
    save({"params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
          "init": {k: v.detach().clone() for k, v in init.model.named_parameters()},
          "result": {k: result[k] for k in ("test_error", "world_size")}}, f"method_{method}")


# global-batch MultiMix through the real engine: parameters stay in sync and the weights span both ranks' rows
if "multimix" in METHODS:
    # digits: 1,297 images -> 649 per rank (padded as DistributedSampler) = 11 batches of 59, none partial
    trainer = Trainer(TrainConfig(method="multimix", method_kwargs={"n": 40, "global_batch": True},
                                  **dict(SMALL, batch_size=59)), out=OUT / "global", progress=False, store=False)
    trainer.run()
    save({"params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
          "weights_rows": trainer.method.last_weights.shape[0], "batch": 59}, "global_multimix")


# global-batch Dense MultiMix: through the engine (cnn11: the non-GAP path), and against a single-process
# reference on the concatenated global batch (a BN-free GAP + linear staged net, so that ranks see the same maps)
if "dense-multimix" in METHODS:
    from mixlab.models.staged import StagedNet

    trainer = Trainer(TrainConfig(method="dense-multimix", method_kwargs={"n": 8, "global_batch": True},
                                  **dict(SMALL, batch_size=59)), out=OUT / "global_dense", progress=False, store=False)
    trainer.run()

    class TinyGap(StagedNet):
        def __init__(self):
            super().__init__()
            torch.manual_seed(3)
            self.stages = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())])
            self.head = nn.Linear(4, 3)

    def dense(seed, global_batch):
        return METHODS.create("dense-multimix", num_classes=3, n=6, clean_weight=0.0, seed=seed,
                              global_batch=global_batch)

    x_all = torch.randn(2 * 4, 1, 5, 5, generator=torch.Generator().manual_seed(11))
    t_all = nn.functional.one_hot(torch.arange(8) % 3, 3).float()
    rank, world = get_rank(), get_world_size()
    own = local_rows(4)
    net, method = TinyGap(), dense(300 + rank, True)
    step = nn.parallel.DistributedDataParallel(TrainStep(net, method, soft_cross_entropy))
    dense_loss = step(x_all[own], t_all[own])
    dense_loss.backward()
    ref_losses, ref_grads = [], []
    for r in range(world):  # rank r's loss, computed in one process on the whole global batch
        ref_net = TinyGap()
        ref_loss = dense(300 + r, False).training_loss(ref_net, x_all, t_all)
        ref_losses.append(float(ref_loss))
        ref_grads.append(torch.autograd.grad(ref_loss, list(ref_net.parameters())))
    save({"loss": float(dense_loss), "ref_loss": ref_losses[rank], "weights_shape": tuple(method.last_weights.shape),
          "grads": [p.grad.clone() for p in net.parameters()],
          "ref_grads": [sum(g) / world for g in zip(*ref_grads)],
          "engine_params": {k: v.detach().clone() for k, v in trainer.model.named_parameters()},
          "engine_weights_rows": trainer.method.last_weights.shape[-2], "batch": 59}, "global_dense")


# ------------------------------------------------------------------------------------------ 2. gather_global
def local_x(rank, b=4, d=3):
    return torch.randn(b, d, generator=torch.Generator().manual_seed(100 + rank))


def mixing_weights(rank, n_mix=5, n_global=8):
    g = torch.Generator().manual_seed(200 + rank)  # each rank its own interpolation weights over the global set
    gamma = torch._standard_gamma(torch.ones(n_mix, n_global), generator=g)
    return gamma / gamma.sum(-1, keepdim=True)  # Dirichlet(1) rows


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(7)))

    def forward(self, x, lam):
        z = gather_global(x @ self.w)  # (world * B, 2): every rank's embeddings
        self.seen = z.detach().clone()
        z_mix = lam @ z  # interpolate over the global batch
        return (z_mix.sin() ** 2).sum()


rank, world = get_rank(), get_world_size()
embed = Embed()
ddp_embed = nn.parallel.DistributedDataParallel(embed)
loss = ddp_embed(local_x(rank), mixing_weights(rank))
loss.backward()  # DDP averages w.grad over ranks

# single-process reference: the mean over ranks of each rank's loss on the concatenated global batch
ref = Embed()
x_all = torch.cat([local_x(r) for r in range(world)])
ref_loss = sum((((mixing_weights(r) @ (x_all @ ref.w)).sin() ** 2).sum()) for r in range(world)) / world
ref_loss.backward()
# what a gather without gradient routing (other ranks' rows detached) would give, for contrast
naive = Embed()
z_all = x_all @ naive.w
own = torch.zeros(world * 4, 1, dtype=torch.bool)
own[local_rows(4)] = True
z_naive = torch.where(own, z_all, z_all.detach())
naive_loss = ((mixing_weights(rank) @ z_naive).sin() ** 2).sum()
naive_loss.backward()
naive_grad = naive.w.grad.clone()
dist.all_reduce(naive_grad)
save({"seen": embed.seen, "expected_seen": x_all @ ref.w.detach(), "grad": embed.w.grad.clone(),
      "ref_grad": ref.w.grad.clone(), "naive_grad": naive_grad / world}, "gather")


# ----------------------------------------------------------------------------------------------- 3. resume
class Interrupted(Trainer):
    def train_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return super().train_epoch(epoch)


config = TrainConfig(method="mixup", **dict(SMALL, epochs=2))
whole = Trainer(config, out=OUT / "whole", progress=False)
whole.run()
try:
    Interrupted(config, out=OUT / "resumed", progress=False).run()
except KeyboardInterrupt:
    pass
resumed = Trainer(config, out=OUT / "resumed", progress=False)
resumed_result = resumed.run(resume=True)
save({"whole": {k: v.clone() for k, v in whole.model.state_dict().items()},
      "resumed": {k: v.clone() for k, v in resumed.model.state_dict().items()},
      "start_epoch": resumed.start_epoch, "whole_error": whole.evaluate()["test_error"],
      "resumed_error": resumed_result["test_error"]}, "resume")
if rank == 0:
    (OUT / "done.json").write_text(json.dumps({"world": world, "methods": methods}))
dist.barrier()
dist.destroy_process_group()
