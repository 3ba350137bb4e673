"""torchrun detection: the same fit() runs single-process or as one rank of a DDP job."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch

from ..errors import ReslabError

__all__ = ["DistContext", "init_distributed", "resolve_device", "convert_sync_batchnorm", "GlobalBatchNorm2d"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ReslabError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
        if pref == "cuda":
            return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device(pref)


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local)


_BN_GROUP = None


def _bn_group():
    """A process group of its own for BN statistics, so these synchronous all-reduces never
    interleave with DDP's asynchronous gradient all-reduces on the default group."""
    global _BN_GROUP
    if _BN_GROUP is None:
        _BN_GROUP = torch.distributed.new_group(backend="gloo")
    return _BN_GROUP


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """Batch norm over the global batch of all ranks, for CPU/gloo jobs (``torch.nn.SyncBatchNorm``
    runs only on accelerators). Sums and sums of squares are all-reduced with the differentiable
    ``torch.distributed.nn`` all-reduce, so gradients flow across ranks as in one big batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch.distributed.is_initialized():
            return super().forward(x)
        import warnings

        with warnings.catch_warnings():  # the differentiable all-reduce is what we need here
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        # Sums in float64: E[x^2] - E[x]^2 in float32 loses ~1e-3 of the variance to cancellation,
        # enough to make 2 ranks drift from 1 process within a few steps.
        xd = x.double()
        local = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)),
                           torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)])
        total = all_reduce(local, group=_bn_group())
        n = total[-1]
        mean64 = total[:c] / n
        var64 = (total[c:2 * c] / n - mean64 * mean64).clamp_min(0)
        with torch.no_grad():
            # None only without running statistics (track_running_stats=False), which this forward needs
            tracked = cast(torch.Tensor, self.num_batches_tracked)
            tracked += 1  # in place: the buffer itself counts on
            m = self.momentum if self.momentum is not None else 1.0 / float(tracked)
            self.running_mean.mul_(1 - m).add_(mean64.float(), alpha=m)
            self.running_var.mul_(1 - m).add_((var64 * n / (n - 1).clamp_min(1)).float(), alpha=m)
        # Normalise in float64 too: nearly constant channels make the backward ill-conditioned.
        y = (xd - mean64[None, :, None, None]) * torch.rsqrt(var64 + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight.double()[None, :, None, None] + self.bias.double()[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``--sync-bn``: BN statistics over the global batch. torch's SyncBatchNorm on GPUs,
    :class:`GlobalBatchNorm2d` on CPUs. Parameters and buffers are kept."""
    if device.type != "cpu":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model
