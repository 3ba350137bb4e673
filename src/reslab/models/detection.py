"""Detection and instance segmentation over any reslab classifier: backbones (+FPN) for torchvision's
detectors, and the registered detectors built on them.

:func:`detection_backbone` turns a classifier with the feature contract (``features_only=True``,
``feature_info``) into what torchvision's ``FasterRCNN``, ``MaskRCNN``, ``RetinaNet`` and ``FCOS``
take as ``backbone``: a module with ``out_channels`` whose forward returns an ``OrderedDict`` of
maps ``"0"`` .. ``"3"``, ``"pool"`` (torchvision's ``BackboneWithFPN``: a
``FeaturePyramidNetwork`` of 256 channels with ``LastLevelMaxPool`` over the last four stages,
strides 4 to 32), with torchvision's ``FrozenBatchNorm2d`` and its ``trainable_layers`` freezing.
It loads a reslab run, a reslab ``.safetensors`` file or a torchvision state dict into the
classifier part (the classifier head dropped) and reports what it loaded.

:class:`Detector` wraps the torchvision detector built on such a backbone, with torchvision's
contract (train mode: a dict of losses; eval mode: a list of dicts of ``boxes``, ``labels``,
``scores`` and, for Mask R-CNN, ``masks``). Registered: ``fasterrcnn_<bb>_fpn`` (Ren et al. 2015),
``maskrcnn_<bb>_fpn`` (He et al. 2017) and ``retinanet_<bb>_fpn`` (Lin et al. 2017) for ``bb`` in
resnet18/34/50/101, and built on demand for any other registered classifier (``fasterrcnn_densenet121_fpn``).
``num_classes`` counts the background (class 0), as torchvision's.
"""

from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..errors import ReslabError, UnknownModelError
from . import densenet, resnet  # noqa: F401  (their names are registered before the detectors over them)
from .base import Backbone, check, is_int
from .registry import ModelEntry, create_model, get_model_entry, make_entry, register_model, register_resolver
from .weights import WeightsSource, convert_torchvision_state_dict, read_weights

__all__ = ["detection_backbone", "DetectionBackbone", "Detector", "DetectorBuilder", "LoadReport", "freeze_batch_norm",
           "DETECTOR_KINDS", "read_weights"]

REN2015 = "Ren et al. 2015, Faster R-CNN: Towards Real-Time Object Detection with Region Proposal Networks"
HE2017 = "He et al. 2017, Mask R-CNN"
LIN2017 = "Lin et al. 2017, Focal Loss for Dense Object Detection (RetinaNet)"
DETECTOR_KINDS = ("fasterrcnn", "maskrcnn", "retinanet")
DetectorKind = Literal["fasterrcnn", "maskrcnn", "retinanet"]
_PAPERS = {"fasterrcnn": REN2015, "maskrcnn": HE2017, "retinanet": LIN2017}
FPN_CHANNELS = 256  # torchvision's (and the FPN paper's) pyramid width


# Keys of a classifier that a backbone leaves out: reslab's heads, torchvision's VGG/AlexNet classifier.
_HEAD_PREFIXES = ("head.", "aux_heads.", "classifier.")
# A whole detector's state dict given as backbone weights: its body under these prefixes.
_DETECTOR_BODY_PREFIXES = ("net.backbone.body.", "backbone.body.")


@dataclass(frozen=True)
class LoadReport:
    """What loading weights into a detection backbone did: keys (in the backbone's names) loaded,
    source keys ignored (the classifier head, and with ``strict=False`` keys it does not have),
    and backbone keys the source lacked (left at their initialisation; only with ``strict=False``)."""

    source: str
    backbone: str
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line for the user: how many tensors were loaded, what was ignored and missed."""
        line = f"loaded {len(self.loaded)} tensors of {self.source} into the {self.backbone} backbone"
        for label, keys in (("ignored", self.ignored), ("missing (left at initialisation)", self.missing)):
            if keys:
                more = f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""
                line += f"; {label}: {', '.join(keys[:4])}{more}"
        return line


@torch.no_grad()
def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` (in place) by torchvision's ``FrozenBatchNorm2d``
    with the same statistics, affine parameters and ``eps``; returns ``module``. A BN without
    running statistics (``track_running_stats=False``) has nothing to freeze and stays."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and child.running_mean is not None and child.running_var is not None:
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.running_mean.device)
            if child.weight is not None and child.bias is not None:
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def _stage_indices(body: Backbone) -> list[int]:
    """``feature_info`` indices of the stages (the stem is entry 0)."""
    return list(range(1, len(body.feature_info)))


def _default_out_indices(body: Backbone) -> tuple[int, ...]:
    return tuple(_stage_indices(body)[-4:])


class DetectionBackbone(nn.Module):
    """A reslab classifier's feature maps (``body``, a :class:`~reslab.models.base.Backbone` built
    with ``features_only=True``) with a feature pyramid on top (``fpn``), as torchvision's
    ``BackboneWithFPN``: ``forward`` returns an ``OrderedDict`` ``"0"`` (finest) .. ``"N-1"``
    and the extra block's maps (``"pool"`` for ``LastLevelMaxPool``, ``"p6"``, ``"p7"`` for
    RetinaNet's ``LastLevelP6P7``). Without ``fpn`` it returns the body's last map as a tensor.

    Build it with :func:`detection_backbone`. ``out_channels`` is what torchvision's detectors read;
    ``load_report`` is what :meth:`load_body` last did (``None`` before).

    Args:
        body: the classifier's feature extractor.
        fpn: put a ``FeaturePyramidNetwork`` of ``out_channels`` over all of ``body``'s maps.
        extra_blocks: the FPN's extra levels (default ``LastLevelMaxPool``, as torchvision's).
        out_channels: the FPN's width (256).
    """

    def __init__(self, body: Backbone, *, fpn: bool = True, extra_blocks: ExtraFPNBlock | None = None,
                 out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        if not isinstance(body, Backbone) or not body.features_only:
            raise ReslabError(f"a detection backbone's body must be a reslab classifier built with features_only=True, "
                              f"got {type(body).__name__}")
        self.body = body
        channels = [body.feature_info[i].num_chs for i in body.out_indices]
        if fpn:
            self.fpn: FeaturePyramidNetwork | None = FeaturePyramidNetwork(
                channels, out_channels, extra_blocks=extra_blocks if extra_blocks is not None else LastLevelMaxPool())
            self.out_channels = out_channels
        else:
            self.fpn = None
            self.out_channels = channels[-1]
        self.load_report: LoadReport | None = None

    @property
    def name(self) -> str:
        """The classifier's registry name, e.g. ``"resnet50"``."""
        return str(getattr(self.body, "model_name", type(self.body).__name__))

    @property
    def num_maps(self) -> int:
        """Maps ``forward`` returns: the body's plus the FPN's extra levels (1 without FPN)."""
        if self.fpn is None:
            return 1
        extra = self.fpn.extra_blocks
        added = 1 if isinstance(extra, LastLevelMaxPool) else 2 if isinstance(extra, LastLevelP6P7) else 0
        return len(self.body.out_indices) + added

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        maps = self.body(x)
        assert isinstance(maps, list)  # a features_only body's maps (a type refinement)
        if self.fpn is None:
            return maps[-1]
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))

    def load_body(self, weights: WeightsSource, source: str = "auto", *, strict: bool = True,
                  label: str | None = None) -> LoadReport:
        """Load a classifier's weights into ``body``; the classifier's head is ignored.

        Args:
            weights: a state dict, a reslab run directory, a ``.safetensors`` or ``.pth`` file (see
                :func:`read_weights`). A whole detector's state dict (torchvision's or a
                :class:`Detector`'s) gives its backbone body.
            source: ``"reslab"`` (reslab's key names), ``"torchvision"`` (torchvision's, converted
                as :func:`~reslab.load_torchvision_state_dict` does: build a bottleneck ResNet with
                ``stride_in="3x3"`` for them) or ``"auto"`` (told apart by the key names).
            strict: every tensor of the body must come from ``weights`` and every key of
                ``weights`` outside the head must fit (else a :class:`~reslab.errors.ReslabError`
                naming the keys); ``False`` loads what fits and reports the rest.
            label: names the weights in messages (default: the path, or "a state dict").

        Returns the :class:`LoadReport` (also kept as ``load_report``).
        """
        tensors, read_label, source_model = read_weights(weights)
        label = label or read_label
        for prefix in _DETECTOR_BODY_PREFIXES:
            if any(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
                break
        if source not in ("auto", "reslab", "torchvision"):
            raise ReslabError(f"source must be 'auto', 'reslab' or 'torchvision', got {source!r}")
        if source == "auto":
            source = "reslab" if any(k.startswith(("stem.", "stages.")) for k in tensors) else "torchvision"
        if source == "torchvision":
            tensors = convert_torchvision_state_dict(self.body, tensors)
        own = self.body.state_dict()
        ignored = [k for k in tensors if k.startswith(_HEAD_PREFIXES)]
        # a classifier's BN counters have no place in FrozenBatchNorm2d (which keeps no counter)
        quiet = {k for k in tensors if k.endswith("num_batches_tracked") and k not in own}
        rest = {k: v for k, v in tensors.items() if not k.startswith(_HEAD_PREFIXES) and k not in quiet}
        missing = [k for k in own if k not in rest]
        unexpected = [k for k in rest if k not in own]
        mismatched = [f"{k} {tuple(rest[k].shape)} vs {tuple(own[k].shape)}" for k in own
                      if k in rest and rest[k].shape != own[k].shape]
        if mismatched or (strict and (missing or unexpected)):
            parts = []
            for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
                if items:
                    more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                    parts.append(f"{what}: {', '.join(items[:3])}{more}")
            of = f" of {source_model}" if source_model and source_model not in label else ""
            raise ReslabError(f"the weights{of} in {label} do not fit the {self.name} backbone ({'; '.join(parts)}); "
                              f"give weights of a {self.name} classifier (the same architecture options)")
        fits = {k: v for k, v in rest.items() if k in own}
        self.body.load_state_dict(fits, strict=False)
        self.load_report = LoadReport(label, self.name, loaded=list(fits), ignored=ignored + unexpected, missing=missing)
        return self.load_report


def _set_trainable(body: Backbone, trainable_stages: int) -> None:
    """torchvision's ``trainable_layers`` on a reslab body: the last ``trainable_stages`` stages
    train (and ``final``, after the last stage), the others and the stem are frozen; one more than
    the number of stages trains everything, the stem included."""
    n = len(body.stages)
    name = getattr(body, "model_name", type(body).__name__)
    check([(is_int(trainable_stages) and 0 <= trainable_stages <= n + 1,
            f"trainable_stages must be 0..{n + 1} for {name} ({n} stages; {n + 1} trains the stem too), "
            f"got {trainable_stages!r}")])
    if trainable_stages == n + 1:
        prefixes: tuple[str, ...] = ("",)
    else:
        prefixes = tuple(f"stages.{i}." for i in range(n - trainable_stages, n))
        if trainable_stages:
            prefixes += ("final.",)
    for pname, p in body.named_parameters():
        p.requires_grad_(pname.startswith(prefixes))


def detection_backbone(name: str, *, fpn: bool = True, out_indices: Sequence[int] | None = None,
                       trainable_stages: int = 3, frozen_bn: bool = True, weights: WeightsSource | None = None,
                       extra_blocks: ExtraFPNBlock | None = None, fpn_channels: int = FPN_CHANNELS,
                       **arch: Any) -> DetectionBackbone:
    """A backbone for torchvision's detectors from the registered classifier ``name``.

    ``torchvision.models.detection.FasterRCNN(detection_backbone("resnet50"), num_classes=2)``
    builds what ``fasterrcnn_resnet50_fpn`` does, with a reslab body; so do ``MaskRCNN``,
    ``RetinaNet`` and ``FCOS`` (their default anchor generators expect the five maps of the
    default four stages plus ``"pool"``).

    Args:
        name: a registered classifier with the feature contract, e.g. ``"resnet50"``.
        fpn: a ``FeaturePyramidNetwork`` (256 channels) over the maps, as torchvision's
            ``BackboneWithFPN``; ``False``: the last of those maps only (``out_channels`` its channels).
        out_indices: which ``feature_info`` maps (default: the last four stages, strides 4 to 32
            for a ResNet, as torchvision's ``returned_layers=[1, 2, 3, 4]``).
        trainable_stages: torchvision's ``trainable_layers``: the last ``trainable_stages`` stages
            train, the rest has ``requires_grad=False``; 5 for a four-stage ResNet trains everything,
            the stem included.
        frozen_bn: replace every ``BatchNorm2d`` of the body by ``FrozenBatchNorm2d`` (statistics and
            affine parameters copied; ``weights`` then load into it), as torchvision's detection
            backbones do.
        weights: a classifier's weights for the body (see :meth:`DetectionBackbone.load_body`): a
            reslab run directory, a ``.safetensors`` file, a ``.pth`` file or a state dict,
            reslab's or torchvision's (e.g. ``torchvision.models.resnet50().state_dict()`` with
            ``stride_in="3x3"``). The head is dropped; ``load_report`` says what was loaded.
        extra_blocks: the FPN's extra levels (default ``LastLevelMaxPool``; RetinaNet's is
            ``LastLevelP6P7(256, 256)``).
        fpn_channels: the pyramid's width (torchvision's 256); the detectors' heads take their
            width from it (``out_channels``), so a narrower pyramid makes a cheaper detector.
        **arch: the classifier's architecture options, e.g. ``stride_in="3x3"`` (torchvision's
            ResNet-50 v1.5) or ``widths=(16, 32, 64, 128)``.
    """
    entry = get_model_entry(name)
    if entry.task != "classify":
        raise ReslabError(f"a detection backbone must be a classifier, {name} is a {entry.task} model")
    if "in_chans" in arch and arch["in_chans"] != 3:
        raise ReslabError(f"detection backbones take RGB images (torchvision's detectors normalise 3 channels): "
                          f"in_chans must be 3, got {arch['in_chans']!r}")
    for key in ("num_classes", "features_only", "out_indices"):
        arch.pop(key, None)
    body = create_model(name, features_only=True, **arch)
    if not isinstance(body, Backbone):
        raise ReslabError(f"{name} does not follow the Backbone feature contract: no detection backbone over it")
    indices = _default_out_indices(body) if out_indices is None else tuple(out_indices)
    n = len(body.feature_info)
    if not indices or not all(is_int(i) and -n <= i < n for i in indices):
        raise ReslabError(f"out_indices must be indices of {name}'s {n} feature maps (0 is the stem), got {out_indices!r}")
    # one build: the maps are picked on the features_only body, as create_model(out_indices=...) would
    body.out_indices = tuple(i % n for i in indices)[-1:] if not fpn else tuple(i % n for i in indices)
    check([(is_int(fpn_channels) and fpn_channels >= 1, f"fpn_channels must be a positive integer, got {fpn_channels!r}")])
    backbone = DetectionBackbone(body, fpn=fpn, extra_blocks=extra_blocks, out_channels=fpn_channels)
    if frozen_bn:
        freeze_batch_norm(body)
    if weights is not None:  # into FrozenBatchNorm2d too: the classifier's statistics and affine parameters
        backbone.load_body(weights)
    _set_trainable(body, trainable_stages)
    return backbone


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform (normalisation, batching to multiples of 32) without its resizing:
    images are used at the size given (``min_size=None``; reslab's data pipeline sizes them)."""

    def resize(self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        return image, target


def _anchor_generator(kind: str, levels: int) -> AnchorGenerator:
    """torchvision's default anchors, one size (R-CNN) or three octave scales (RetinaNet) from 32
    pixels doubling per level, three aspect ratios; for ``levels`` maps."""
    base = [32 * 2 ** i for i in range(levels)]
    sizes: tuple[tuple[int, ...], ...]
    if kind == "retinanet":
        sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in base)
    else:
        sizes = tuple((x,) for x in base)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)


class Detector(nn.Module):
    """A torchvision detector (``net``: ``FasterRCNN``, ``MaskRCNN`` or ``RetinaNet``) over a
    :class:`DetectionBackbone`, with torchvision's contract.

    ``forward(images, targets=None)``: ``images`` a list of float ``(3, H, W)`` tensors in [0, 1]
    (normalised inside, with ImageNet's mean and std); in train mode ``targets`` (a dict per image:
    ``boxes`` float ``(N, 4)`` x1, y1, x2, y2 in pixels, ``labels`` int64 in 1..K-1, ``masks``
    uint8 ``(N, H, W)`` for Mask R-CNN) and a dict of losses is returned; in eval mode a list of
    dicts (``boxes``, ``labels``, ``scores``, and ``masks`` float ``(N, 1, H, W)`` for Mask R-CNN).

    Anchors and RoI pooling follow torchvision's defaults for the backbone's number of maps.
    Attributes: ``kind``, ``num_classes``, ``has_masks``, ``model_name``, ``in_chans`` (3),
    ``backbone`` (the :class:`DetectionBackbone`). ``create_model("maskrcnn_resnet18_fpn", ...)``
    also takes ``trainable_stages``, ``frozen_bn``, ``fpn_channels`` and the classifier's
    architecture options (see :func:`detection_backbone`). A randomly initialised body wants
    ``frozen_bn=False`` (and ``trainable_stages=5``), as torchvision builds it without weights:
    a frozen BN at its defaults normalises nothing.

    Args:
        kind: ``"fasterrcnn"``, ``"maskrcnn"`` or ``"retinanet"``.
        backbone: from :func:`detection_backbone` (RetinaNet's with ``LastLevelP6P7``).
        num_classes: classes including the background (index 0).
        min_size: the short side images are resized to (a tuple: one picked at random per training
            image); ``None``: no resizing.
        max_size: the long side's bound when resizing.
        box_batch_size_per_image, rpn_batch_size_per_image: R-CNN's sampled RoIs and anchors per image.
        box_detections_per_img: detections kept per image.
        box_score_thresh: detections scoring below it are dropped (torchvision's 0.05).
    """

    in_chans = 3

    def __init__(self, kind: DetectorKind, backbone: DetectionBackbone, *, num_classes: int = 91,
                 min_size: int | Sequence[int] | None = 800, max_size: int = 1333, box_batch_size_per_image: int = 512,
                 rpn_batch_size_per_image: int = 256, box_detections_per_img: int = 100,
                 box_score_thresh: float = 0.05) -> None:
        super().__init__()
        sizes: tuple[int, ...] = () if min_size is None else (
            (cast(int, min_size),) if is_int(min_size) else tuple(cast(Sequence[int], min_size)))
        check([
            (kind in DETECTOR_KINDS, f"kind must be one of {DETECTOR_KINDS}, got {kind!r}"),
            (is_int(num_classes) and num_classes >= 2,
             f"num_classes counts the background too: at least 2, got {num_classes!r}"),
            (min_size is None or (len(sizes) > 0 and all(is_int(s) and s >= 1 for s in sizes)),
             f"min_size must be a positive integer, a list of them or None (no resizing), got {min_size!r}"),
        ])
        check([
            (is_int(max_size) and max_size >= max(sizes, default=1), f"max_size must be an integer >= min_size, got {max_size!r}"),
            *[(is_int(v) and v >= 1, f"{k} must be a positive integer, got {v!r}") for k, v in (
                ("box_batch_size_per_image", box_batch_size_per_image), ("rpn_batch_size_per_image", rpn_batch_size_per_image),
                ("box_detections_per_img", box_detections_per_img))],
            (isinstance(box_score_thresh, (int, float)) and 0 <= box_score_thresh < 1,
             f"box_score_thresh must be in [0, 1), got {box_score_thresh!r}"),
        ])
        self.kind = kind
        self.num_classes = num_classes
        self.has_masks = kind == "maskrcnn"
        self.min_size = min_size
        self.model_name = f"{kind}_{backbone.name}_fpn"
        levels = backbone.num_maps
        names = [str(i) for i in range(len(backbone.body.out_indices))]
        resize: Any = sizes or 800
        net: nn.Module
        if kind == "retinanet":
            net = RetinaNet(backbone, num_classes, min_size=resize, max_size=max_size,
                            anchor_generator=_anchor_generator(kind, levels), detections_per_img=box_detections_per_img,
                            score_thresh=box_score_thresh)
        else:
            common: dict[str, Any] = dict(
                min_size=resize, max_size=max_size, rpn_anchor_generator=_anchor_generator(kind, levels),
                box_roi_pool=MultiScaleRoIAlign(names, 7, 2), box_batch_size_per_image=box_batch_size_per_image,
                rpn_batch_size_per_image=rpn_batch_size_per_image, box_detections_per_img=box_detections_per_img,
                box_score_thresh=box_score_thresh)
            if kind == "maskrcnn":
                net = MaskRCNN(backbone, num_classes, mask_roi_pool=MultiScaleRoIAlign(names, 14, 2), **common)
            else:
                net = FasterRCNN(backbone, num_classes, **common)
        if min_size is None:
            t = cast(GeneralizedRCNNTransform, net.transform)
            net.transform = _NoResizeTransform(800, max_size, t.image_mean, t.image_std)
        self.net = net

    @property
    def backbone(self) -> DetectionBackbone:
        """The :class:`DetectionBackbone` (``net.backbone``)."""
        return cast(DetectionBackbone, self.net.backbone)

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        for img in images:
            if img.ndim != 3 or img.shape[0] != 3 or not img.is_floating_point():
                raise ReslabError(f"{self.model_name} takes float RGB images (3, H, W) in [0, 1]; got one of shape "
                                  f"{tuple(img.shape)} and dtype {str(img.dtype).replace('torch.', '')}")
        if self.training and targets is None:
            raise ReslabError(f"{self.model_name} in training mode needs targets (boxes and labels per image); "
                              "call model.eval() to detect")
        return self.net(images, targets)

    def load_encoder(self, state_dict: WeightsSource, source: str = "reslab", *, label: str | None = None) -> LoadReport:
        """Load a classifier's weights into the backbone's body (its head ignored); a classifier of
        another architecture raises :class:`~reslab.errors.ReslabError` naming both.

        Args:
            state_dict: the classifier's state dict (or a run directory / weights file).
            source: ``"reslab"``, ``"torchvision"`` or ``"auto"`` (see :meth:`DetectionBackbone.load_body`).
            label: names the weights in messages.
        """
        try:
            return self.backbone.load_body(state_dict, source, label=label)
        except ReslabError as e:
            raise ReslabError(f"{self.model_name}.load_encoder: {e}") from None

    def load_torchvision(self, state_dict: Mapping[str, torch.Tensor]) -> Detector:
        """Load a torchvision detector's state dict (e.g. ``fasterrcnn_resnet50_fpn``'s COCO
        weights into ``create_model("fasterrcnn_resnet50_fpn", stride_in="3x3", num_classes=91)``):
        the body's keys converted to reslab's, the rest (FPN, RPN, heads) as they are, strictly.
        Weights trained with ``FrozenBatchNorm2d(eps=0)`` (torchvision's ``COCO_V1``) want the
        frozen layers' ``eps`` set to 0 after loading."""
        body_prefix = "backbone.body."
        body = {k[len(body_prefix):]: v for k, v in state_dict.items() if k.startswith(body_prefix)}
        state = {f"net.{k}": v for k, v in state_dict.items() if not k.startswith(body_prefix)}
        state.update({f"net.{body_prefix}{k}": v for k, v in convert_torchvision_state_dict(self.backbone.body, body).items()})
        own = self.state_dict()
        state = {k: v for k, v in state.items() if not (k.endswith("num_batches_tracked") and k not in own)}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                      if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or mismatched:
            parts = [f"{what}: {', '.join(items[:3])}" + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")
                     for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                     if items]
            raise ReslabError(f"the torchvision state dict does not fit {self.model_name}: {'; '.join(parts)}")
        self.load_state_dict(state, strict=True)
        return self

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        """The body's stem and stages, the pyramid, then the heads, by their module paths, for
        :func:`~reslab.models.info.model_info`."""
        body = self.backbone.body
        rows: list[tuple[str, nn.Module]] = [("net.backbone.body.stem", body.stem)]
        rows += [(f"net.backbone.body.stages.{i}", s) for i, s in enumerate(body.stages)]
        net: Any = self.net
        if self.backbone.fpn is not None:
            rows.append(("net.backbone.fpn", self.backbone.fpn))
        if isinstance(net, RetinaNet):
            rows += [("net.head.classification_head", net.head.classification_head),
                     ("net.head.regression_head", net.head.regression_head)]
        else:
            heads = net.roi_heads
            rows += [("net.rpn.head", net.rpn.head), ("net.roi_heads.box_head", heads.box_head),
                     ("net.roi_heads.box_predictor", heads.box_predictor)]
            if isinstance(net, MaskRCNN):
                rows += [("net.roi_heads.mask_head", heads.mask_head), ("net.roi_heads.mask_predictor", heads.mask_predictor)]
        return rows


_SET_BY_DETECTOR = frozenset({"num_classes", "features_only", "out_indices"})


class DetectorBuilder:
    """``create_model``'s builder for ``<kind>_<backbone>_fpn``: the detector's options go to
    :class:`Detector`, ``trainable_stages``, ``frozen_bn`` and ``fpn_channels`` to :func:`detection_backbone`, the
    others (the classifier's architecture options, e.g. ``stride_in="3x3"``) build the body;
    ``in_chans`` must be 3."""

    def __init__(self, kind: str, backbone: str) -> None:
        if kind not in DETECTOR_KINDS:
            raise ValueError(f"kind must be one of {DETECTOR_KINDS}, got {kind!r}")
        entry = get_model_entry(backbone)
        if entry.task != "classify":
            raise ValueError(f"a detection backbone must be a classifier, {backbone!r} is a {entry.task} model")
        self.kind = kind
        self.backbone = backbone
        own = {p for p in inspect.signature(Detector.__init__).parameters if p not in ("self", "kind", "backbone")}
        if kind == "retinanet":  # no RPN, no RoI sampling
            own -= {"box_batch_size_per_image", "rpn_batch_size_per_image"}
        self.own = frozenset(own)
        self.accepts = frozenset(self.own | {"in_chans", "trainable_stages", "frozen_bn", "fpn_channels"}
                                 | (entry.accepts - _SET_BY_DETECTOR))

    def __call__(self, *, trainable_stages: int = 3, frozen_bn: bool = True, fpn_channels: int = FPN_CHANNELS,
                 in_chans: int = 3, **overrides: Any) -> Detector:
        if in_chans != 3:
            raise ReslabError(f"{self.kind}_{self.backbone}_fpn takes RGB images (torchvision's transform normalises 3 "
                              f"channels with ImageNet's mean and std): in_chans must be 3, got {in_chans!r}")
        own = {k: v for k, v in overrides.items() if k in self.own}
        arch = {k: v for k, v in overrides.items() if k not in self.own}
        out_indices: tuple[int, ...] | None = None
        extra: ExtraFPNBlock | None = None
        if self.kind == "retinanet":  # P3-P5 and P6, P7 from P5: torchvision's returned_layers=[2, 3, 4]
            out_indices = (-3, -2, -1)
            extra = LastLevelP6P7(fpn_channels, fpn_channels)
        backbone = detection_backbone(self.backbone, out_indices=out_indices, trainable_stages=trainable_stages,
                                      frozen_bn=frozen_bn, extra_blocks=extra, fpn_channels=fpn_channels, **arch)
        return Detector(cast(DetectorKind, self.kind), backbone, **own)


def _detector_entry(kind: str, backbone: str) -> ModelEntry:
    paper = get_model_entry(backbone).paper
    return make_entry(DetectorBuilder(kind, backbone), name=f"{kind}_{backbone}_fpn", family="detection",
                      paper=f"{_PAPERS[kind]}; backbone: {paper or backbone}", input_size=(3, 800, 800), task="detect")


_NAME = re.compile(r"^(fasterrcnn|maskrcnn|retinanet)_(.+)_fpn$")


@register_resolver
def _resolve_detector(name: str) -> ModelEntry | None:
    """``<kind>_<name>_fpn`` for any registered classifier that is not registered itself."""
    m = _NAME.match(name)
    if m is None:
        return None
    try:
        entry = get_model_entry(m.group(2))
    except UnknownModelError:
        return None
    return _detector_entry(m.group(1), m.group(2)) if entry.task == "classify" else None


for _kind in DETECTOR_KINDS:
    for _bb in ("resnet18", "resnet34", "resnet50", "resnet101"):
        _entry = _detector_entry(_kind, _bb)
        register_model(_entry.builder, name=_entry.name, family=_entry.family, paper=_entry.paper,
                       input_size=_entry.input_size, task=_entry.task)
