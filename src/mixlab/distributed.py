"""Data-parallel helpers (``torchrun``): process group set-up, sharding, a global-batch gather, the DDP step.

In the lowest layer (torch only), so that methods may gather across processes and the engine may wrap them.

Launch any training command under ``torchrun --nproc-per-node N`` and the engine trains one model replica per
process with PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, NCCL on GPU).
Everything here degrades to the single-process identity when ``torch.distributed`` is not initialised, so
methods can call it unconditionally.

The one-line hook for methods that interpolate "beyond the mini-batch" across devices (MultiMix with
``global_batch=True``)::

    z, t = gather_global(z), gather_global(t)   # (B, D) -> (world * B, D); grads flow back to the owner rank

``gather_global`` concatenates the rank-ordered shards of every process (so this rank's examples are rows
``rank * B : (rank + 1) * B``) and, in backward, sends every rank the sum over all processes of the gradient
with respect to its own rows. With DDP averaging parameter gradients over ranks, that is exactly the gradient
of the mean over ranks of the per-rank losses, as a single process holding the global batch would compute.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


# ------------------------------------------------------------------------------------------ process info
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def env_world_size() -> int:
    """The number of processes ``torchrun`` launched (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> torch.device:
    """Join the process group ``torchrun`` describes (env vars), if any; return this process's device.

    Backend: NCCL for CUDA devices, gloo otherwise. On CUDA the device becomes ``cuda:LOCAL_RANK``.
    A no-op (returning ``device``) outside torchrun or when the group already exists.
    """
    if env_world_size() <= 1 and not is_distributed():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not is_distributed():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (picklable objects; identity when single-process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a tensor over ranks (a copy; identity when single-process)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / get_world_size()


def all_reduce_min(value: Tensor) -> Tensor:
    """Minimum of a tensor over ranks (a copy; identity when single-process)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return value


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank, in place."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


def shard_indices(order: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's share of a permutation, as :class:`torch.utils.data.DistributedSampler` does it.

    The permutation (identical on every rank) is padded by repeating its head to a multiple of
    ``world_size``, and rank ``r`` takes positions ``r, r + world, r + 2 world, ...``: every rank gets the same
    number of examples (so all ranks take the same number of steps) and together they cover every example.
    """
    if world_size <= 1:
        return order
    n = order.numel()
    total = -(-n // world_size) * world_size
    if total > n:
        order = torch.cat([order, order[: total - n]])
    return order[rank:total:world_size]


# ------------------------------------------------------------------------------------------- global batch
class _GatherGlobal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        world = dist.get_world_size()
        ctx.rank, ctx.batch = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty((ctx.batch, *grad.shape[1:]), device=grad.device, dtype=grad.dtype)
            dist.reduce_scatter_tensor(out, grad)
            return out
        # gloo has no reduce-scatter: sum everywhere, keep our rows
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.batch:(ctx.rank + 1) * ctx.batch]


def gather_global(x: Tensor) -> Tensor:
    """Concatenate ``x`` ``(B, ...)`` from every rank in rank order: ``(world * B, ...)``; autograd-aware.

    Every rank must pass the same shape (the engine's sharding gives equal batches). Backward returns to each
    rank the gradient of the *sum of all ranks' losses* with respect to its own rows, so DDP's gradient
    averaging yields the gradient of the global mean loss. Single-process: returns ``x`` itself.
    """
    if not is_distributed() or get_world_size() == 1:
        return x
    if x.requires_grad:
        return _GatherGlobal.apply(x)
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def local_rows(n_local: int) -> slice:
    """The rows of this rank's examples inside a :func:`gather_global` result."""
    rank = get_rank()
    return slice(rank * n_local, (rank + 1) * n_local)


# ------------------------------------------------------------------------------------------------ DDP step
class TrainStep(nn.Module):
    """Model + method as one module whose ``forward`` is a whole training loss.

    Methods run the staged model piece by piece (``forward_features`` / ``pool`` / ``head``), which would
    bypass :class:`DistributedDataParallel`'s ``forward`` -- and DDP only arms its gradient hooks (and
    broadcasts buffers) inside its own ``forward``. Wrapping this module instead puts every method's whole
    step inside one DDP forward: the method still gets the plain model with its staged interface, and the
    gradients of the model *and* of the method's learned parameters (AutoMix) are all-reduced.
    """

    def __init__(self, model: nn.Module, method: nn.Module, loss_fn):
        super().__init__()
        self.model, self.method, self.loss_fn = model, method, loss_fn

    def forward(self, x: Tensor, targets: Tensor) -> Tensor:
        return self.method.training_loss(self.model, x, targets, self.loss_fn)


def wrap_ddp(model: nn.Module, method: nn.Module, loss_fn, device: torch.device) -> nn.Module:
    """The DDP-wrapped :class:`TrainStep` (call it as ``loss = step(x, targets)``).

    ``find_unused_parameters`` is off unless the method sets ``ddp_find_unused_parameters = True`` (for methods
    that leave some trainable parameters out of some steps).
    """
    from torch.nn.parallel import DistributedDataParallel

    step = TrainStep(model, method, loss_fn)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids,
                                   find_unused_parameters=getattr(method, "ddp_find_unused_parameters", False))
