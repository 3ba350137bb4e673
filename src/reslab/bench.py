"""``reslab bench``: every inference path of a model or run timed in one process, against
torchvision's eager model of the same architecture."""

from __future__ import annotations

__all__: list[str] = []
