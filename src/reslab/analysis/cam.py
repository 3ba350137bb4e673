"""Grad-CAM (Selvaraju et al. 2017): where a classifier looks for a class.

The feature maps ``A`` (K, h, w) of the last stage (the model's last ``feature_info`` entry) are
weighted by the spatial mean of the class score's gradient, ``alpha_k = mean_ij dy_c / dA_kij``
(Eq. 1), summed over channels and passed through a ReLU (Eq. 2): ``relu(sum_k alpha_k A_k)``. The
map is upsampled bilinearly to the input's size and scaled to [0, 1] for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ReslabError
from ..predict import LoadedRun

__all__ = ["last_stage", "grad_cam", "overlay", "write_cams"]


def last_stage(model: nn.Module) -> tuple[str, nn.Module]:
    """The module of the model's last ``feature_info`` entry (a ResNet's last stage)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ReslabError(f"{type(model).__name__} has no feature_info, so its last stage is unknown; Grad-CAM needs "
                          "a reslab classifier")
    name = info[-1].module
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        raise ReslabError(f"{type(model).__name__}'s feature_info names {name!r}, which is not one of its modules") from None


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[torch.Tensor, int, torch.Tensor]:
    """The Grad-CAM map of one normalised image ``x`` (C, H, W) for class ``target`` (default: the
    predicted class), in evaluation mode.

    Returns:
        ``(cam, class, raw)``: ``cam`` (H, W) upsampled and scaled to [0, 1] (all zeros where the
        raw map is), the class explained, and ``raw`` (h, w), the map at the stage's resolution.
    """
    if x.dim() != 3:
        raise ReslabError(f"x must be one image (C, H, W), got {tuple(x.shape)}")
    _, stage = last_stage(model)
    kept: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: tuple, out: torch.Tensor) -> None:
        kept["a"] = out

    handle = stage.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x[None])
            cls = int(logits.argmax(1)) if target is None else int(target)
            if not 0 <= cls < logits.shape[1]:
                raise ReslabError(f"class {cls} is out of range: the model has {logits.shape[1]} classes")
            a = kept["a"]
            (grad,) = torch.autograd.grad(logits[0, cls], a)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grad[0].mean(dim=(1, 2))  # alpha_k, Eq. 1
    raw = torch.relu((weights[:, None, None] * a[0].detach()).sum(0))  # Eq. 2
    up = F.interpolate(raw[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = float(up.max())
    return (up / top if top > 0 else torch.zeros_like(up)), cls, raw


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """A uint8 (H, W, 3) picture: ``image`` (uint8 (C, H, W)) blended with ``cam`` in the jet colour map."""
    from matplotlib import colormaps

    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    heat = torch.as_tensor(colormaps["jet"](cam.clamp(0, 1).numpy())[..., :3], dtype=torch.float32)
    mixed = (1 - alpha) * rgb.permute(1, 2, 0).float() / 255 + alpha * heat
    return (mixed.clamp(0, 1) * 255).round().to(torch.uint8)


def write_cams(run: LoadedRun, paths: Sequence[str | Path], out_dir: str | Path) -> list[tuple[Path, str, Path]]:
    """For each image file, ``out_dir/NAME_cam.png``: the Grad-CAM overlay of the run's predicted class on
    the network's input (``reslab predict --cam DIR``). Returns ``(image, class, overlay)`` per image."""
    from PIL import Image

    from ..data.decode import open_image
    from ..io import atomic_path
    from ..predict import image_path

    if run.runtime != "torch":
        raise ReslabError(f"--cam needs the eager model's gradients; drop --runtime {run.runtime}")
    param = next(run.model.parameters())
    norm = run.normalizer.to(param.device)
    out_dir = Path(out_dir)
    done = []
    for p in map(image_path, paths):
        raw = run.preprocess(open_image(str(p), "L" if run.channels == 1 else "RGB"))
        cam, cls, _ = grad_cam(run.model, norm(raw[None].to(param.device))[0])
        dst = out_dir / f"{p.stem}_cam.png"
        with atomic_path(dst) as tmp:
            Image.fromarray(overlay(raw, cam.cpu()).numpy()).save(tmp, format="PNG")
        done.append((p, run.classes[cls], dst))
    return done
