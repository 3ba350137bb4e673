"""Loss landscapes along filter-normalised random directions (Li et al. 2018, "Visualizing the loss
landscape of neural nets", Sec. 4 and 6).

A direction ``d`` has the shape of the weights. Each filter of it (one output channel of a conv or
fully-connected weight) is drawn from a Gaussian and rescaled to the norm of the same filter of the
trained weights, so a step ``alpha`` moves every filter by the same fraction of its own size
whatever its scale; batch-norm parameters and biases are left unperturbed (directions zero there),
as the paper does. The loss is evaluated at ``theta + alpha d1 (+ beta d2)`` on a fixed batch, the
network in evaluation mode (its running statistics).

The curvature at the centre is summarised as the paper does (Sec. 7): the largest and smallest
eigenvalues of the loss Hessian, by power iteration on Hessian-vector products, and the ratio
``|lambda_min / lambda_max|`` (near 0: locally convex; large: strongly non-convex).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError

CHUNK = 250  # images per forward pass of a grid cell
HESSIAN_IMAGES = 100  # images of the Hessian's double-backward graph

__all__ = ["filter_normalised_direction", "loss_at", "hessian_extremes", "available_memory", "memory_needed",
           "check_memory"]


def _weights(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in model.named_parameters()]


def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> list[torch.Tensor]:
    """A random direction, one tensor per parameter: Gaussian, each filter scaled to the norm of the
    model's filter; zero for 1-d parameters (batch norm's scale and shift, biases)."""
    out = []
    for _, p in _weights(model):
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p)
        dims = tuple(range(1, p.dim()))
        norm = torch.linalg.vector_norm
        d = d * (norm(p.detach(), dim=dims, keepdim=True) / norm(d, dim=dims, keepdim=True).clamp_min(1e-12))
        out.append(d)
    return out


@torch.no_grad()
def loss_at(model: nn.Module, directions: Sequence[Sequence[torch.Tensor]], coords: Sequence[float], x: torch.Tensor,
            y: torch.Tensor, *, chunk: int = CHUNK) -> tuple[float, float]:
    """``(mean cross-entropy, top-1 error %)`` at ``theta + sum_i coords[i] * directions[i]``, in evaluation
    mode; the weights are restored exactly afterwards."""
    params = [p for _, p in _weights(model)]
    saved = [p.detach().clone() for p in params]
    was_training = model.training
    model.eval()
    try:
        for i, p in enumerate(params):
            for c, d in zip(coords, directions):
                if c:
                    p.add_(d[i], alpha=float(c))
        loss, wrong = 0.0, 0
        for s in range(0, len(x), chunk):
            logits = model(x[s:s + chunk]).float()
            loss += float(F.cross_entropy(logits, y[s:s + chunk], reduction="sum"))
            wrong += int((logits.argmax(1) != y[s:s + chunk]).sum())
    finally:
        for p, v in zip(params, saved):
            p.copy_(v)
        model.train(was_training)
    return loss / len(x), 100.0 * wrong / len(x)


def hessian_extremes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, iters: int = 20,
                     seed: int = 0) -> tuple[float, float]:
    """``(lambda_max, lambda_min)`` of the Hessian of the mean cross-entropy on ``(x, y)`` with respect
    to every weight, in evaluation mode: power iteration for the eigenvalue largest in size, then power
    iteration on ``H - lambda_max I`` for the other end of the spectrum."""
    if iters < 1:
        raise ReslabError(f"iters must be at least 1, got {iters}")
    params = [p for _, p in _weights(model) if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            with torch.enable_grad():
                return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))

        gen = torch.Generator().manual_seed(seed)
        top = _power(hvp, params, iters, gen, shift=0.0)
        other = _power(hvp, params, iters, gen, shift=top)
    finally:
        model.train(was_training)
    # the shifted operator's eigenvalue is lambda - top: the far end of the spectrum from top
    lam_max, lam_min = max(top, other + top), min(top, other + top)
    return lam_max, lam_min


def _power(hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]], params: list[torch.Tensor], iters: int,
           gen: torch.Generator, shift: float) -> float:
    v = [torch.randn(p.shape, generator=gen).to(p) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.stack([(t * t).sum() for t in v]).sum().sqrt()
        v = [t / norm for t in v]
        hv = [h - shift * t for h, t in zip(hvp(v), v)]
        lam = float(sum((a * b).sum() for a, b in zip(v, hv)))  # Rayleigh quotient
        v = [h.detach() for h in hv]
    return lam


def available_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on ``device``: the GPU's free memory, or the CPU's ``MemAvailable``
    (None where neither can be read)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@torch.no_grad()
def memory_needed(model: nn.Module, example: torch.Tensor, *, chunk: int, hessian_images: int, directions: int) -> int:
    """Bytes a landscape measurement holds at its peak, estimated before it starts: the weights, a saved
    copy and the directions, plus the larger of one evaluation chunk's activations and the Hessian's
    double-backward graph (taken as 4 times the activations of ``hessian_images`` images)."""
    sizes: list[int] = []

    def hook(_m: nn.Module, _i: tuple, out: object) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        model(example[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    per_image = sum(sizes)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (2 + directions) + max(chunk * per_image, 4 * hessian_images * per_image)


def _need(model: nn.Module, example: torch.Tensor, images: int, directions: int) -> int:
    return memory_needed(model, example, chunk=min(images, CHUNK), hessian_images=min(images, HESSIAN_IMAGES),
                         directions=directions)


def check_memory(model: nn.Module, example: torch.Tensor, *, images: int, directions: int, device: torch.device) -> None:
    """Raise a one-line ReslabError when a landscape of ``images`` images would not fit in 80% of
    ``device``'s free memory, saying how many images would."""
    free = available_memory(device)
    if free is None:
        return
    budget = 0.8 * free
    need = _need(model, example, images, directions)
    if need <= budget:
        return
    lo, hi = 0, images  # the most images that fit: _need grows with images
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _need(model, example, mid, directions) <= budget:
            lo = mid
        else:
            hi = mid - 1
    what = f"--images {lo} fits" if lo >= 2 else "not even 2 images fit: use a smaller model or another device"
    raise ReslabError(f"the landscape would need about {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is free on "
                      f"{device}; {what}")
