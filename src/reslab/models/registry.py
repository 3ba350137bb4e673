"""One registry: the only list of architecture names.

The CLI, the tests and the README table all read it. The family modules register their names
when :mod:`reslab.models` is imported (this module imports none of them). A registered builder is any callable that
returns an ``nn.Module`` from keyword overrides; :func:`create_model` checks the overrides against
what the builder accepts and rejects the others by name.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ReslabError, UnknownModelError

__all__ = ["ModelEntry", "register_model", "register_resolver", "make_entry", "create_model", "list_models",
           "get_model_entry", "TASKS", "TASK_NOUNS"]

TASKS = ("classify", "segment", "stylize", "restore", "detect")
TASK_NOUNS = {"classify": "classification", "segment": "segmentation", "stylize": "style-transfer",
              "restore": "super-resolution", "detect": "detection"}
"""How messages name a run of each task (\"... is a segmentation run\")."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its builder and the facts a user looks up beside it.

    ``task`` is what the model predicts: ``"classify"`` (logits ``(N, K)``; every classifier is a
    :class:`~reslab.models.base.Backbone`) or ``"segment"`` (logits ``(N, K, H', W')``; a
    :class:`~reslab.models.base.SegmentationModel`); ``"stylize"``: images in [0, 1] to stylised
    images of the same size (:class:`~reslab.models.style.StyleTransformNet`); ``"restore"``: a
    low-resolution image to one ``model.scale`` times larger (super-resolution, :mod:`reslab.models.sr`);
    ``"detect"``: a list of images to boxes, labels, scores (and masks) per image, torchvision's
    detection contract (:class:`~reslab.models.detection.Detector`).
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str = ""
    paper: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    accepts: frozenset[str] = field(default_factory=frozenset)
    task: str = "classify"


_REGISTRY: dict[str, ModelEntry] = {}
# Names built on demand (``unet_<any classifier>``): resolvers turn a name into an entry or None;
# what they resolve is kept here, apart from the registry, so list_models shows only registered names.
_RESOLVERS: list[Callable[[str], ModelEntry | None]] = []
_RESOLVED: dict[str, ModelEntry] = {}


def _accepted_keywords(builder: Callable[..., Any]) -> frozenset[str]:
    accepts = getattr(builder, "accepts", None)
    if accepts is not None:
        return frozenset(accepts)
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise ValueError(
            f"builder {builder!r} takes **kwargs: give it an explicit signature or an "
            "'accepts' attribute so create_model can reject unknown overrides by name"
        )
    return frozenset(p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def register_model(
    builder: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    family: str = "",
    paper: str = "",
    input_size: tuple[int, int, int] = (3, 224, 224),
    task: str = "classify",
):
    """Register ``builder`` under ``name`` (default: the builder's ``__name__``).

    Usable as ``@register_model``, ``@register_model(paper=...)`` or as a plain call
    ``register_model(builder, name="resnet56", ...)``. A duplicate name raises. ``task`` is
    ``"classify"`` or ``"segment"`` (see :class:`ModelEntry`).
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model name {key!r} is already registered")
        _REGISTRY[key] = make_entry(fn, name=key, family=family, paper=paper, input_size=input_size, task=task)
        return fn

    return add(builder) if builder is not None else add


def make_entry(builder: Callable[..., nn.Module], *, name: str, family: str = "", paper: str = "",
               input_size: tuple[int, int, int] = (3, 224, 224), task: str = "classify") -> ModelEntry:
    """The :class:`ModelEntry` for ``builder`` (what :func:`register_model` stores; resolvers return one)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return ModelEntry(
        name=name,
        builder=builder,
        family=family,
        paper=paper,
        input_size=(input_size[0], input_size[1], input_size[2]),
        accepts=_accepted_keywords(builder),
        task=task,
    )


def register_resolver(resolver: Callable[[str], ModelEntry | None]) -> Callable[[str], ModelEntry | None]:
    """Let ``resolver(name)`` supply entries for names that are not registered, e.g. the U-Net
    family's ``unet_<classifier>`` over any registered classifier. It returns a
    :class:`ModelEntry` (see :func:`make_entry`) or ``None``; :func:`list_models` does not list
    what resolvers supply."""
    _RESOLVERS.append(resolver)
    return resolver


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name`` (or one a resolver supplies, e.g. ``unet_resnet101``); an
    unknown name raises with close matches suggested."""
    entry = _REGISTRY.get(name) or _RESOLVED.get(name)
    if entry is not None:
        return entry
    for resolve in _RESOLVERS:
        entry = resolve(name)
        if entry is not None:
            _RESOLVED[name] = entry
            return entry
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run 'reslab models' to list them"
    raise UnknownModelError(f"unknown model {name!r}: {hint}")


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the architecture registered as ``name`` on the CPU in float32.

    Args:
        name: a registered name, e.g. ``"resnet56"`` (see :func:`list_models`).
        **overrides: keyword options the architecture accepts, e.g. ``num_classes=10``,
            ``shortcut="B"``, ``stride_in="3x3"``, ``features_only=True``. An option the
            architecture does not accept raises :class:`~reslab.errors.ReslabError` naming it.
    """
    entry = get_model_entry(name)
    unknown = sorted(set(overrides) - entry.accepts)
    if unknown:
        raise ReslabError(
            f"{name} does not accept {', '.join(repr(u) for u in unknown)}; "
            f"it accepts: {', '.join(sorted(entry.accepts))}"
        )
    model = entry.builder(**overrides)
    model.model_name = name  # type: ignore[assignment]
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern`` (e.g. ``"resnet*"``), sorted naturally."""
    names = [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]

