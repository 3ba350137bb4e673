"""The backbone contract every reslab classifier follows, the contract of the dense (segmentation)
models, and the spec-to-builder glue.

A classifier is ``stem -> stages -> final -> head``. ``feature_info`` describes the stem's and each
stage's output (channels, reduction), so analysis tools, dense-prediction heads (U-Net encoders)
and ``features_only=True`` need no per-model code. A stem that ends in a max-pool named ``pool``
(the ImageNet ResNet/DenseNet stem) exposes its map *before* that pool, at reduction 2, as timm
does: a U-Net decoder then has a stride-2 skip.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
from torch import nn

from ..errors import ReslabError

__all__ = [
    "Backbone", "ClassifierHead", "SegmentationModel", "SpecBuilder", "FeatureInfo", "AuxOutput",
    "Spec", "check", "is_int", "is_number", "positive_ints",
]


class AuxOutput(NamedTuple):
    """What a model with auxiliary classifiers (GoogLeNet, Inception-v3) or intermediate supervision
    (the stacked hourglass: ``logits`` the last stack's, ``aux_logits`` the earlier stacks') returns
    in training mode.

    The training loss is ``loss(logits) + sum(w * loss(a) for a, w in zip(aux_logits, aux_weights))``;
    in eval mode such models return plain logits. The fields are lists, not tuples of any length,
    because TorchScript has no variable-length tuple type (``torch.jit.script`` compiles this class).
    """

    logits: torch.Tensor
    aux_logits: list[torch.Tensor]
    aux_weights: list[float]


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone exposes: its channels, its stride w.r.t. the input, its module."""

    num_chs: int
    reduction: int
    module: str


class ClassifierHead(nn.Module):
    """Global pooling, optional dropout, and a linear classifier (``fc``).

    ``num_classes=0`` leaves the pooled features (``fc`` is the identity), as in timm.
    """

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.pool(x), 1)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class Backbone(nn.Module):
    """Base class for classifiers built as ``stem -> stages -> final -> head``.

    A subclass's constructor takes its ``spec`` and, as keywords, the options below (and any of
    its own); it calls ``super().__init__(spec, num_classes, in_chans)``, sets ``self.stem``,
    ``self.stages`` (an iterable of modules), ``self.final`` (applied after the last stage, e.g. a
    pre-activation net's last BN-ReLU), ``self.head`` and ``self.feature_info`` (stem first, then
    one entry per stage), then calls :meth:`_finish_init`. A stem ending in an ``nn.MaxPool2d``
    named ``pool`` gets its ``feature_info`` entry moved before the pool there (``stem.act`` at
    half the reduction); ``forward`` and the logits do not change.

    Args:
        spec: the architecture, a frozen dataclass of the family.
        num_classes: classifier outputs (0: no classifier; ``forward`` returns the pre-logits
            features: pooled maps, or the last hidden layer of a fully connected head).
        in_chans: input image channels.
        features_only: ``forward`` returns the feature maps of ``feature_info`` instead of logits.
        out_indices: which of those maps (default: all).
    """

    # Constants for torch.jit.script: branches on them are compiled only where they are taken (a
    # features_only model's head is the identity, which takes no pre_logits).
    __constants__ = ["features_only", "_stem_pool"]

    if TYPE_CHECKING:  # declarations for type checkers only: torch.jit.script reads class annotations
        in_chans: int
        num_classes: int
        num_features: int
        features_only: bool
        feature_info: list[FeatureInfo]
        stem: nn.Module
        stages: nn.Sequential
        final: nn.Module  # an nn.Identity or a Sequential (a pre-activation net's BN-ReLU)
        head: nn.Module  # a ClassifierHead or FCHead; the nn.Identity with features_only

    def __init__(self, spec: Any, num_classes: int, in_chans: int) -> None:
        super().__init__()
        check([
            (is_int(num_classes) and num_classes >= 0, f"num_classes must be a non-negative integer, got {num_classes!r}"),
            (is_int(in_chans) and in_chans >= 1, f"in_chans must be a positive integer, got {in_chans!r}"),
        ])
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans

    def _finish_init(self, features_only: bool, out_indices: Sequence[int] | None) -> None:
        self.features_only = features_only
        n = len(self.feature_info)
        indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        for i in indices:
            if not -n <= i < n:
                raise ReslabError(f"out_indices {indices} out of range: this model has {n} feature maps")
        self.out_indices = tuple(i % n for i in indices)
        if features_only:
            self.head = nn.Identity()
        # The stem's map is taken before a trailing max-pool (timm's feature_info does the same).
        self._stem_pool = False
        stem = getattr(self, "stem", None)
        names = [name for name, _ in stem.named_children()] if isinstance(stem, nn.Sequential) else []
        first = self.feature_info[0]
        if (len(names) >= 2 and names[-1] == "pool" and isinstance(stem[-1], nn.MaxPool2d)
                and first.module == "stem"):
            stride = stem[-1].stride
            stride = stride if isinstance(stride, int) else stride[0]
            self.feature_info[0] = FeatureInfo(first.num_chs, first.reduction // stride, f"stem.{names[-2]}")
            self._stem_pool = True

    # -- the contract ---------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for input that is not ``(N, in_chans, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ReslabError(
                f"{getattr(self, 'model_name', type(self).__name__)} expects input of shape "
                f"(N, {self.in_chans}, H, W); got {tuple(x.shape)}. Convert the images to "
                f"{self.in_chans} channel(s) or build the model with in_chans={x.shape[1] if x.ndim == 4 else '...'}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input images to the last feature map (before global pooling)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last feature map to logits (or to pooled features with ``pre_logits=True``)."""
        return self.head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps named by ``feature_info`` selected by ``out_indices``."""
        maps: list[torch.Tensor] = []
        if self._stem_pool:
            # the stem is a Sequential ending in its max-pool (type: ignore, as it is declared a Module)
            last = len(self.stem) - 1  # type: ignore[arg-type]
            for i, layer in enumerate(self.stem):  # type: ignore
                if i == last:  # the map before the max-pool, whose output is the first stage's input
                    maps.append(x)
                x = layer(x)
        else:
            x = self.stem(x)
            maps.append(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        maps[-1] = self.final(maps[-1])
        return [maps[i] for i in self.out_indices]

    # AuxOutput: what a subclass with auxiliary heads returns in training mode (InceptionNet)
    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | AuxOutput:
        if not torch.jit.is_scripting():  # a scripted model leaves the check to its first layer
            self.check_input(x)
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return cast(nn.Module, self.head.fc)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for ``num_classes`` (0: none)."""
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


class SegmentationModel(nn.Module):
    """Base class of the dense-prediction models: ``forward`` maps ``(N, in_chans, H, W)`` images to
    logits ``(N, num_classes, H', W')``.

    Same-padding models return ``H' = H``; the paper's valid U-Net returns a centred smaller map.
    A subclass sets ``in_chans`` and ``num_classes`` and implements :meth:`output_margin` and
    :meth:`_size_problem`; :meth:`info_rows` names the levels that ``model_info`` tabulates.
    """

    if TYPE_CHECKING:  # declarations for type checkers only: torch.jit.script reads class annotations
        in_chans: int
        num_classes: int

    def __init__(self, num_classes: int, in_chans: int) -> None:
        super().__init__()
        check([
            (is_int(num_classes) and num_classes >= 1, f"num_classes must be a positive integer, got {num_classes!r}"),
            (is_int(in_chans) and in_chans >= 1, f"in_chans must be a positive integer, got {in_chans!r}"),
        ])
        self.num_classes = num_classes
        self.in_chans = in_chans

    def output_margin(self, h: int, w: int) -> tuple[int, int]:
        """Pixels the output loses on each side for an ``h`` x ``w`` input: ``((h - H') // 2,
        (w - W') // 2)``; ``(0, 0)`` for same-size models. Raises for an illegal size."""
        self.check_input_size(h, w)
        return (0, 0)

    def _size_problem(self, h: int, w: int) -> str | None:
        """Why ``h`` x ``w`` is not a legal input size (what to use instead), or ``None``."""
        return None

    def check_input_size(self, h: int, w: int) -> None:
        """Raise :class:`~reslab.errors.ReslabError` naming the legal sizes when ``h`` x ``w`` is not one."""
        if not (is_int(h) and is_int(w) and h >= 1 and w >= 1):
            raise ReslabError(f"input sides must be positive integers, got {h!r} x {w!r}")
        problem = self._size_problem(h, w)
        if problem is not None:
            raise ReslabError(f"{getattr(self, 'model_name', type(self).__name__)} cannot take a {h}x{w} input: {problem}")

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for input that is not ``(N, in_chans, H, W)`` with a legal ``H, W``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ReslabError(
                f"{getattr(self, 'model_name', type(self).__name__)} expects input of shape "
                f"(N, {self.in_chans}, H, W); got {tuple(x.shape)}. Convert the images to "
                f"{self.in_chans} channel(s) or build the model with in_chans={x.shape[1] if x.ndim == 4 else '...'}"
            )
        self.check_input_size(int(x.shape[-2]), int(x.shape[-1]))

    def info_rows(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of each row of :func:`~reslab.models.info.model_info`'s table: by
        default the direct children."""
        return [(name, m) for name, m in self.named_children() if not isinstance(m, nn.Identity)]


class SpecBuilder:
    """A registry builder for spec-driven families: ``create_model`` overrides go either to the
    spec (its dataclass fields) or to the module's constructor (its keyword arguments).
    """

    def __init__(self, cls: Callable[..., nn.Module], spec: Any, **defaults: Any) -> None:
        self.cls = cls
        self.spec = spec
        self.defaults = defaults
        self.spec_fields = {f.name for f in dataclasses.fields(spec)}
        init = inspect.signature(cls.__init__).parameters
        self.init_kwargs = {p for p in init if p not in ("self", "spec")}
        self.accepts = frozenset(self.spec_fields | self.init_kwargs)

    def __call__(self, **overrides: Any) -> nn.Module:
        spec_over = {k: v for k, v in overrides.items() if k in self.spec_fields}
        kwargs = {**self.defaults, **{k: v for k, v in overrides.items() if k not in self.spec_fields}}
        return self.cls(dataclasses.replace(self.spec, **spec_over), **kwargs)


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the specs and modules of every family: a spec lists its rules as
# ``(ok, message)`` conditions in one place, and the first that fails raises.

Condition = tuple[bool, str]


def check(conditions: Iterable[Condition]) -> None:
    """Raise :class:`~reslab.errors.ReslabError` with the message of the first condition that fails."""
    for ok, message in conditions:
        if not ok:
            raise ReslabError(message)


def is_int(v: object) -> bool:
    """An integer, and not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def positive_ints(values: Sequence[object]) -> bool:
    """A non-empty sequence of positive integers."""
    return len(values) > 0 and all(is_int(v) and v >= 1 for v in values)


class Spec:
    """Base of the family specs (frozen dataclasses): the checks their ``__post_init__`` runs, each
    on a field named once. The ``(ok, message)`` helpers make one condition for :meth:`_check`,
    beside hand-written ones for rules of a single family::

        self._tuples("widths")
        self._check(self._positive_ints("widths"), self._rate("drop_rate"), (ok, "message"))
    """

    def _tuples(self, *names: str) -> None:
        """Turn the named fields into tuples (lists arrive from YAML and the CLI)."""
        for name in names:
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @staticmethod
    def _check(*conditions: Condition) -> None:
        check(conditions)

    def _positive_int(self, name: str) -> Condition:
        value = getattr(self, name)
        return is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}"

    def _positive_ints(self, name: str, *, empty: bool = False) -> Condition:
        """A tuple of positive integers (``empty``: or none at all)."""
        value = getattr(self, name)
        return positive_ints(value) or (empty and value == ()), f"{name} must be positive integers, got {value}"

    def _rate(self, name: str) -> Condition:
        """A dropout probability: in ``[0, 1)``."""
        value = getattr(self, name)
        return is_number(value) and 0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value!r}"

    def _flag(self, name: str) -> Condition:
        value = getattr(self, name)
        return isinstance(value, bool), f"{name} must be True or False, got {value!r}"

    def _one_of(self, name: str, choices: Sequence[object]) -> Condition:
        value = getattr(self, name)
        names = [repr(c) for c in choices]
        listed = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        return value in choices, f"{name} must be {listed}, got {value!r}"
