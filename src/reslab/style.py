"""Fast style transfer's perceptual losses (Johnson, Alahi & Fei-Fei 2016), and what uses a trained
style network: its losses on held-out content images, the content | style | output figure, and
stylised image files.

The **loss network** is a frozen classifier read from a file:

- torchvision's VGG-16 state dict (``vgg16-397923af.pth``, :data:`VGG16_URL`; keys
  ``features.N.weight``): its layers up to relu4_3, the paper's. The style layers are relu1_2,
  relu2_2, relu3_3 and relu4_3, the content layer relu2_2. The input is normalised with the
  ImageNet mean and standard deviation those weights were trained with.
- any reslab classifier run directory: its best (else last) weights and its own input
  normalisation; the layers are its ``feature_info`` maps (stem and stages), the content layer the
  second of them (as relu2_2 is VGG's second). A 1-channel classifier sees the luminance.

A file for another architecture is refused in one line naming what was expected.

The losses, for an output ``y`` of a content image ``c`` and the style image ``s``, with ``phi_j``
the loss network's map ``j`` of shape ``(C_j, H_j, W_j)``:

- feature (content) loss: ``||phi_j(y) - phi_j(c)||^2 / (C_j H_j W_j)`` at the content layer (the
  paper's Eq. 2; the mean squared difference);
- style loss: the Gram matrix ``G_j = phi_j phi_j^T / (C_j H_j W_j)`` (the paper's Eq. 3), and the
  mean squared difference of ``G_j(y)`` and ``G_j(s)`` summed over the style layers. The paper
  writes the squared Frobenius norm, ``C_j^2`` times this; the mean is what Johnson's released code
  and PyTorch's ``examples/fast_neural_style`` compute, whose weights (content 1e5, style 1e10
  with torchvision's VGG-16) are the defaults here;
- total variation: the mean over pixels and channels of the squared differences to the right and
  lower neighbours of ``y`` in [0, 1] (the beta = 2 regulariser of Mahendran & Vedaldi that the
  paper cites).

Each is averaged over the batch; the total is ``content_weight * content + style_weight * style +
tv_weight * tv``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import rundir
from .config import RunConfig
from .data import DatasetSplits, FileImages, load_dataset
from .data.decode import open_image
from .data.transforms import pil_resize_center_crop, pil_to_uint8, resize_center_crop
from .errors import ReslabError
from .io import atomic_path, atomic_write_text
from .models import get_model_entry
from .models.weights import read_safetensors
from .plots import new_figure, save_png
from .predict import LoadedRun, image_path, load_run

__all__ = [
    "VGG16_URL", "VGG16_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD", "STYLE_RECORD", "LossNetwork", "VGG16Features",
    "RunFeatures", "load_loss_network", "gram_matrix", "tv_loss", "StyleLosses", "PerceptualLoss",
    "load_style_image", "file_sha256", "content_images", "StyleResult", "StyleEvaluation", "evaluate_style",
    "evaluate_style_run", "run_perceptual_loss", "record_style_inputs", "plot_style", "stylize_files", "STYLE_ROWS",
]

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
"""torchvision's ImageNet weights of VGG-16 (``VGG16_Weights.IMAGENET1K_V1``), the loss network to use."""
VGG16_LAYERS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
"""The paper's style layers, as indices into torchvision's ``vgg16().features``."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STYLE_RECORD = "style.json"
"""In a style run's directory: the copied style image's name and digest, the loss network's path and digest."""
STYLE_ROWS = 4
"""Content images drawn in a style run's figure (content | style | output)."""

# torchvision's vgg16().features up to relu4_3: (index, in, out) of each 3x3 convolution (padding 1,
# each followed by a ReLU); 2x2 max-pools at indices 4, 9 and 16.
_VGG16_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512))
_VGG16_POOLS = (4, 9, 16)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601: what a 1-channel loss network sees of a colour image


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the loss network -----------------------------------------------------------------------------
class LossNetwork(nn.Module):
    """A frozen feature extractor: images in [0, 1] ``(N, 3, H, W)`` to its feature maps.

    Attributes:
        layers: the names of the maps :meth:`forward` returns (all style layers).
        content_index: which of them is the content layer.
        source: where the weights came from (for messages and the run's record).
        sha256: the digest of the weights file.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, layers: list[str], content_index: int, source: str,
                 sha256: str, in_chans: int = 3) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float(), persistent=False)
        self.register_buffer("std", std.float(), persistent=False)
        self.layers, self.content_index, self.source, self.sha256 = layers, content_index, source, sha256
        self.in_chans = in_chans

    @property
    def content_layer(self) -> str:
        return self.layers[self.content_index]

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps of :attr:`layers` for a normalised input."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.in_chans == 1 and x.shape[1] == 3:
            x = (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
        mean = self.mean
        if mean.shape[-2:] != (1, 1) and mean.shape[-2:] != x.shape[-2:]:
            # a per-pixel mean image of another size, resized as reslab's Normalizer does
            mean = F.interpolate(mean[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        return self.feature_maps((x - mean) / self.std)


class VGG16Features(LossNetwork):
    """torchvision's ``vgg16().features`` up to relu4_3, returning relu1_2, relu2_2, relu3_3, relu4_3."""

    def __init__(self, state: dict[str, torch.Tensor], source: str, sha256: str) -> None:
        super().__init__(torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1),
                         list(VGG16_LAYERS), 1, source, sha256)
        convs = {i: (cin, cout) for i, cin, cout in _VGG16_CONVS}
        layers: list[nn.Module] = []
        for i in range(max(VGG16_LAYERS.values()) + 1):
            if i in convs:
                layers.append(nn.Conv2d(*convs[i], 3, padding=1))
            elif i in _VGG16_POOLS:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)
        self.body.load_state_dict({f"{i}.{p}": state[f"features.{i}.{p}"].float() for i, _, _ in _VGG16_CONVS
                                   for p in ("weight", "bias")})
        self.taps = frozenset(VGG16_LAYERS.values())
        self.requires_grad_(False).eval()

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class RunFeatures(LossNetwork):
    """A reslab classifier's ``feature_info`` maps (``forward_intermediates``), with the run's own
    input normalisation."""

    def __init__(self, run: LoadedRun, source: str, sha256: str) -> None:
        norm = run.normalizer
        layers = [f.module for f in run.model.feature_info]
        super().__init__(norm.mean, norm.std, layers, min(1, len(layers) - 1), source, sha256, in_chans=run.channels)
        self.body = run.model
        self.requires_grad_(False).eval()

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body.forward_intermediates(x))


def _read_state_dict(path: Path, source: str) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        tensors, _ = read_safetensors(path)
        return tensors
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip archives, code in the pickle
        raise ReslabError(f"--loss-net {source} is not a readable PyTorch state dict ({type(e).__name__}); give "
                          f"torchvision's VGG-16 weights ({VGG16_URL}) or a reslab classifier run directory") from None
    for key in ("state_dict", "model"):  # checkpoints that wrap the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ReslabError(f"--loss-net {source} does not hold a state dict of tensors; give torchvision's VGG-16 "
                          f"weights ({VGG16_URL}) or a reslab classifier run directory")
    return dict(obj)


def _check_vgg16(state: dict[str, torch.Tensor], source: str) -> None:
    """One line naming what a torchvision VGG-16 state dict holds, when ``state`` is not one."""
    for i, cin, cout in _VGG16_CONVS:
        for p, shape in (("weight", (cout, cin, 3, 3)), ("bias", (cout,))):
            t = state.get(f"features.{i}.{p}")
            if t is not None and tuple(t.shape) == shape and t.is_floating_point():
                continue
            what = "no such key" if t is None else f"{tuple(t.shape)} ({str(t.dtype).replace('torch.', '')})"
            if "features.1.running_mean" in state:
                kind = "VGG-16 with batch norm (vgg16_bn); the paper's loss network has none"
            else:
                keys = ", ".join(list(state)[:2]) + (", ..." if len(state) > 2 else "")
                kind = f"its keys begin {keys or '(none)'}"
            raise ReslabError(
                f"--loss-net {source} is not a torchvision VGG-16 state dict ({kind}): expected features.{i}.{p} "
                f"of shape {shape}, found {what}; give torchvision's vgg16-397923af.pth ({VGG16_URL}) or a reslab "
                "classifier run directory")
        if not all(bool(torch.isfinite(state[f"features.{i}.{p}"]).all()) for p in ("weight", "bias")):
            raise ReslabError(f"--loss-net {source}: features.{i} holds NaN or Inf values; the file is corrupt")


def load_loss_network(source: str) -> LossNetwork:
    """The loss network of ``source``: a torchvision VGG-16 state dict (``.pth``/``.pt`` or
    ``.safetensors``) or a reslab classifier run directory (see the module docstring)."""
    path = Path(source).expanduser()
    if rundir.is_run_dir(path):
        model = rundir.read_config(path).get("model")
        try:
            task = get_model_entry(str(model)).task
        except KeyError:
            raise ReslabError(f"--loss-net {source}: its config names no known model ({model!r})") from None
        if task != "classify":
            raise ReslabError(f"--loss-net {source} is a {model} run ({task}); the loss network is a classifier: give "
                              f"torchvision's VGG-16 weights ({VGG16_URL}) or a classifier's run directory")
        run = load_run(path, "best", "cpu")
        if not hasattr(run.model, "forward_intermediates"):
            raise ReslabError(f"--loss-net {source}: {model} exposes no feature maps (forward_intermediates)")
        weights = rundir.weights_file(path, run.checkpoint)
        return RunFeatures(run, f"{source} ({model}, {run.checkpoint} checkpoint)", file_sha256(weights))
    if not path.exists():
        raise ReslabError(f"--loss-net {source}: no such file or run directory; download torchvision's VGG-16 "
                          f"weights ({VGG16_URL}) or give a reslab classifier run directory")
    if path.is_dir():
        raise ReslabError(f"--loss-net {source} is a folder but not a run directory; give torchvision's "
                          f"vgg16-397923af.pth or a run written by 'reslab train'")
    state = _read_state_dict(path, source)
    _check_vgg16(state, source)
    return VGG16Features(state, str(source), file_sha256(path))


# -- the losses -----------------------------------------------------------------------------------
def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` maps to ``(N, C, C)`` Gram matrices ``F F^T / (C H W)``, ``F`` the ``(C, HW)``
    matrix of one image's map (Johnson et al. 2016, Eq. 3), in float32."""
    n, c, h, w = f.shape
    x = f.reshape(n, c, h * w).float()
    return torch.bmm(x, x.transpose(1, 2)) / (c * h * w)


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """The total-variation regulariser of images ``(N, C, H, W)``: the squared differences to the
    right and lower neighbours, each averaged over its pixels and channels, summed, then averaged
    over the batch."""
    x = x.float()
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1) if x.shape[-2] > 1 else x.new_zeros(len(x))
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1) if x.shape[-1] > 1 else x.new_zeros(len(x))
    return (dh + dw).mean()


@dataclass
class StyleLosses:
    """One batch's losses (means over the batch): the weighted total and the three unweighted terms."""

    total: torch.Tensor
    content: torch.Tensor
    style: torch.Tensor
    tv: torch.Tensor


class PerceptualLoss(nn.Module):
    """The paper's objective: feature loss to the content image, Gram-matrix loss to the style
    image, total variation (see the module docstring).

    Args:
        net: the loss network (frozen).
        style: the style image, ``(3, H, W)`` in [0, 1]; its Gram matrices are computed once.
        content_weight, style_weight, tv_weight: the terms' weights.
    """

    def __init__(self, net: LossNetwork, style: torch.Tensor, content_weight: float, style_weight: float,
                 tv_weight: float) -> None:
        super().__init__()
        self.net = net
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        with torch.no_grad():
            grams = [gram_matrix(f)[0] for f in net(style[None].float().to(next(net.buffers()).device))]
        for i, g in enumerate(grams):
            self.register_buffer(f"gram{i}", g)
        self.n_layers = len(grams)

    @property
    def grams(self) -> list[torch.Tensor]:
        """The style image's Gram matrix at each style layer, ``(C, C)``."""
        return [getattr(self, f"gram{i}") for i in range(self.n_layers)]

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> StyleLosses:
        """The losses of stylised images ``output`` of the content images ``content`` (both in [0, 1])."""
        feats = self.net(output)
        k = self.net.content_index
        with torch.no_grad():
            target = self.net(content)[k]
        content_loss = F.mse_loss(feats[k].float(), target.float())
        style_loss = sum((F.mse_loss(gram_matrix(f), g.expand(len(f), -1, -1)) for f, g in zip(feats, self.grams)),
                         output.new_zeros((), dtype=torch.float32))
        tv = tv_loss(output)
        total = self.content_weight * content_loss + self.style_weight * style_loss + self.tv_weight * tv
        return StyleLosses(total, content_loss, style_loss, tv)


def load_style_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """The style image as ``(3, H, W)`` floats in [0, 1], its shorter side resized to ``size`` (the
    training content's), bilinear. An undecodable file raises one line."""
    try:
        img = open_image(str(image_path(Path(path))), "RGB")
    except ReslabError as e:
        raise ReslabError(f"--style: {e}") from None
    return pil_to_uint8(pil_resize_center_crop(img, size, None)).float() / 255


def record_style_inputs(run_dir: Path, cfg: RunConfig, net: LossNetwork) -> None:
    """Copy the style image into ``run_dir`` and write :data:`STYLE_RECORD` (the copy's name and
    digest, the loss network's path, kind, layers and digest), so the run can be evaluated again from
    its directory. A resumed run whose loss network or style image changed is refused."""
    record_path = run_dir / STYLE_RECORD
    style = Path(str(cfg.style))
    digest = file_sha256(style)
    if record_path.is_file():
        old = json.loads(record_path.read_text())
        for what, was, now in (("loss network", old.get("loss_net_sha256"), net.sha256),
                               ("style image", old.get("style_sha256"), digest)):
            if was != now:
                raise ReslabError(f"the {what} changed since {run_dir} started (sha256 {str(now)[:12]}..., the run "
                                  f"recorded {str(was)[:12]}...); restore it to continue the same run")
        return
    copy = "style-image" + (style.suffix.lower() or ".img")
    with atomic_path(run_dir / copy) as tmp:
        shutil.copyfile(style, tmp)
    record = {"style": style.name, "style_copy": copy, "style_sha256": digest, "loss_net": str(cfg.loss_net),
              "loss_net_source": net.source, "loss_net_kind": type(net).__name__, "loss_net_sha256": net.sha256,
              "layers": net.layers, "content_layer": net.content_layer}
    atomic_write_text(record_path, json.dumps(record, indent=2))


def run_perceptual_loss(run_dir: Path, cfg: RunConfig) -> PerceptualLoss:
    """The loss a style run was trained with, rebuilt from its directory: the copied style image and
    the recorded loss network, whose digest must still match."""
    record_path = run_dir / STYLE_RECORD
    if not record_path.is_file():
        raise ReslabError(f"{record_path} is missing: the run did not get past its setup")
    try:
        record = json.loads(record_path.read_text())
        copy, want = run_dir / record["style_copy"], record["loss_net_sha256"]
    except (ValueError, KeyError, TypeError):
        raise ReslabError(f"{record_path} is damaged; restore it from a copy of the run") from None
    net = load_loss_network(str(cfg.loss_net))
    if net.sha256 != want:
        raise ReslabError(f"the loss network {cfg.loss_net} is not the one {run_dir} was trained with (sha256 "
                          f"{net.sha256[:12]}..., the run recorded {want[:12]}...); restore that file")
    return PerceptualLoss(net, load_style_image(copy, cfg.crop_size), cfg.content_weight, cfg.style_weight,
                          cfg.tv_weight)


# -- evaluation -----------------------------------------------------------------------------------
def content_images(split: Any, start: int, stop: int, crop: int) -> torch.Tensor:
    """Images ``start:stop`` of a split (classification images, or ``sr:PATH``'s photos) as ``(n, 3, crop, crop)`` floats in [0, 1]:
    the shorter side resized to ``crop`` (bilinear, antialiased), the centre square."""
    if isinstance(split, FileImages):
        x = torch.stack([pil_to_uint8(pil_resize_center_crop(split.load(i), crop, crop)) for i in range(start, stop)])
    elif isinstance(split.images, list):  # photos of many sizes (sr:PATH)
        x = torch.stack([resize_center_crop(split.images[i], crop) for i in range(start, stop)])
    else:
        x = split.images[start:stop]
        if tuple(x.shape[-2:]) != (crop, crop):
            x = resize_center_crop(x, crop)
    return x.float() / 255


@dataclass
class StyleResult:
    """Losses of a style network over content images (means over the images)."""

    n: int
    loss: float
    content_loss: float
    style_loss: float
    tv_loss: float
    crop: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_style(model: nn.Module, split: Any, loss: PerceptualLoss, *, crop: int, batch_size: int = 8,
                   device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                   keep: int = 0) -> tuple[StyleResult, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The losses of ``model`` on every image of ``split`` (centre crops of ``crop`` pixels), and
    the first ``keep`` (content, output) pairs for a figure."""
    device = torch.device(device)
    n = len(split)
    if n == 0:
        raise ReslabError("no content images to evaluate on")
    loss.to(device)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.inference_mode():
            for a in range(0, n, batch_size):
                x = content_images(split, a, min(a + batch_size, n), crop).to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    y = model(x)
                    losses = loss(y, x)
                parts = (losses.total, losses.content, losses.style, losses.tv)
                sums += torch.tensor([float(v) for v in parts], dtype=torch.float64) * len(x)
                kept += [(c.cpu(), o.float().cpu()) for c, o in zip(x, y)][:max(keep - len(kept), 0)]
    finally:
        model.train(was_training)
    total, content, style, tv = (sums / n).tolist()
    return StyleResult(n, total, content, style, tv, crop), kept


def plot_style(rows: Sequence[tuple[torch.Tensor, torch.Tensor]], style: torch.Tensor, path: str | os.PathLike | None,
               *, title: str | None = None) -> None:
    """A figure of content | style | output, one row per (content, output) pair (``(3, H, W)`` in [0, 1])."""
    if not rows:
        raise ReslabError("no images to draw")
    fig = new_figure((7.5, 2.5 * len(rows) + (0.5 if title else 0.2)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, (content, output) in enumerate(rows):
        for ax, img, label in zip(axes[r], (content, style, output), ("content", "style", "output")):
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_title(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    save_png(fig, path)


@dataclass
class StyleEvaluation:
    """What :func:`evaluate_style_run` measured, and where it wrote it."""

    result: StyleResult
    split: str
    checkpoint: str
    weights: dict[str, float]
    json_path: Path | None
    plot_path: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "checkpoint": self.checkpoint, **self.result.to_dict(), "weights": self.weights}

    def summary(self) -> str:
        """One line: the split, the checkpoint, the total loss and its three terms."""
        r, w = self.result, self.weights
        return (f"{self.split} ({r.crop}-pixel centre crops, {self.checkpoint} checkpoint, {r.n} images): perceptual "
                f"loss {r.loss:.6g} = {w['content']:g} x content {r.content_loss:.6g} + {w['style']:g} x style "
                f"{r.style_loss:.6g} + {w['tv']:g} x tv {r.tv_loss:.6g}")


def _content_split(cfg: RunConfig, split: str, data: str | None, data_dir: str | None,
                   splits: DatasetSplits | None) -> Any:
    if split not in ("test", "val"):
        raise ReslabError(f"split must be test or val, got {split!r}")
    name = data or cfg.data
    if splits is None:
        splits = load_dataset(name, data_dir=data_dir or cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                              skip_bad=cfg.skip_bad, image_size=cfg.image_size)
    if splits.channels != 3:
        raise ReslabError(f"{name} has {splits.channels}-channel images; style transfer takes colour images")
    images = splits.test if split == "test" else splits.val
    if images is None or len(images) == 0:
        raise ReslabError(f"{name} has no {split} split to evaluate on" +
                          (" (an image folder gets one from a test/ folder: train/<class>/, test/<class>/)"
                           if split == "test" else ""))
    return images


def evaluate_style_run(run_dir: str | os.PathLike, *, split: str = "test", checkpoint: str = "best",
                       data: str | None = None, data_dir: str | None = None, device: torch.device | str = "cpu",
                       amp_dtype: torch.dtype | None = None, splits: DatasetSplits | None = None,
                       loss: PerceptualLoss | None = None, batch_size: int = 8, write: bool = True) -> StyleEvaluation:
    """A style run's losses on content images of ``split`` (the run's data, or ``data``: any
    classification dataset, labels ignored), with ``eval-{split}-style.json`` and
    ``plots/style-{split}.png`` (content | style | output) written into the run directory.

    ``loss`` (the training loop's) saves rebuilding the loss from the run's record."""
    run = load_run(Path(run_dir), checkpoint, device)
    cfg = run.config
    images = _content_split(cfg, split, data, data_dir, splits)
    if loss is None:
        loss = run_perceptual_loss(run.run_dir, cfg)
    result, rows = evaluate_style(run.model, images, loss, crop=cfg.crop_size, batch_size=batch_size, device=device,
                                  amp_dtype=amp_dtype, keep=STYLE_ROWS)
    weights = {"content": cfg.content_weight, "style": cfg.style_weight, "tv": cfg.tv_weight}
    out = StyleEvaluation(result, split, run.checkpoint, weights, None, None)
    if write:
        out.json_path = run.run_dir / f"eval-{split}-style.json"
        atomic_write_text(out.json_path, json.dumps(out.to_dict(), indent=2))
        out.plot_path = run.run_dir / rundir.PLOTS / f"style-{split}.png"
        out.plot_path.parent.mkdir(parents=True, exist_ok=True)
        style = load_style_image(run.run_dir / json.loads((run.run_dir / STYLE_RECORD).read_text())["style_copy"],
                                 cfg.crop_size)
        plot_style(rows, style, out.plot_path, title=f"{cfg.model}: {split} images ({run.checkpoint} checkpoint)")
    return out


# -- prediction -----------------------------------------------------------------------------------
_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
             ".webp": "WEBP"}


def _targets(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None) -> Iterator[tuple[Path, Path]]:
    out_path = Path(out) if out is not None else Path("stylized")
    if out_path.suffix.lower() in _SUFFIXES and not out_path.is_dir():
        if len(paths) != 1:
            raise ReslabError(f"--out {out_path} names one file but {len(paths)} images were given; give a folder "
                              "for several images")
        yield image_path(Path(paths[0])), out_path
        return
    if out_path.exists() and not out_path.is_dir():
        raise ReslabError(f"--out {out_path} is a file without an image suffix; give NAME.png or a folder")
    srcs = [image_path(Path(p)) for p in paths]
    stems = [p.stem for p in srcs]
    if len(set(stems)) < len(stems):
        raise ReslabError("images with the same name would overwrite each other's output; stylise them into "
                          "different --out folders")
    for p in srcs:
        yield p, out_path / f"{p.stem}_stylized.png"


def stylize_files(run: LoadedRun, paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
                  amp_dtype: torch.dtype | None = None) -> list[tuple[Path, Path]]:
    """Stylise image files whole, at their own size, with a style run's network; returns
    ``(source, written)`` pairs.

    ``out``: one image file (``NAME.png``, ``.jpg``...) for a single image, or a folder (default
    ``stylized/``) for ``NAME_stylized.png`` of each. The network is fully convolutional and its
    instance normalisation takes statistics over the whole image, so images are not tiled: memory
    grows with the image (about 1 GB per 4 megapixels in float32 on a CPU). Files are written
    atomically.
    """
    from PIL import Image

    targets = list(_targets(paths, out))
    param = next(run.model.parameters())
    device = param.device
    written = []
    for src, dst in targets:
        x = pil_to_uint8(open_image(str(src), "RGB"))[None].to(device).float() / 255
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            y = run.model(x)
        img = (y[0].float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        dst.parent.mkdir(parents=True, exist_ok=True)
        fmt = _SUFFIXES[dst.suffix.lower()]
        with atomic_path(dst) as tmp:
            Image.fromarray(img, mode="RGB").save(tmp, format=fmt)
        written.append((src, dst))
    return written

