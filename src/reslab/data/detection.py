"""Detection datasets: images with boxes, labels and (optionally) instance masks.

The split container is :class:`DetectionImages`, whose targets follow torchvision's detection
contract (``boxes`` x1, y1, x2, y2 in pixels, ``labels`` 1..K-1 with 0 the background, ``masks``
one 0/1 plane an instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import ReslabError

__all__ = ["DetectionImages"]


@dataclass(eq=False)
class DetectionImages:
    """A detection split held in memory; the images may differ in size.

    Args:
        images: uint8 tensors (3, H, W).
        targets: One dict an image: ``boxes`` float32 (N, 4) as x1, y1, x2, y2 in pixels (pixel
            edges: x2 > x1, y2 > y1), ``labels`` int64 (N,) in 1..K-1 (0 is the background),
            ``masks`` uint8 (N, H, W) of 0/1 (only when ``has_masks``), ``image_id`` int64 () the
            image's index in the full dataset.
        names: The file stem of each image, for messages and figures.
        has_masks: Whether every target carries ``masks``.
    """

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    names: list[str]
    has_masks: bool

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.targets) == len(self.names):
            raise ReslabError(f"DetectionImages needs one target and one name an image: got {len(self.images)} "
                              f"images, {len(self.targets)} targets, {len(self.names)} names")
        for x, t, name in zip(self.images, self.targets, self.names):
            if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
                raise ReslabError(f"image {name} must be a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
            boxes, labels = t.get("boxes"), t.get("labels")
            if boxes is None or labels is None or "image_id" not in t:
                raise ReslabError(f"the target of image {name} needs boxes, labels and image_id, got {sorted(t)}")
            if boxes.dtype != torch.float32 or boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ReslabError(f"boxes of image {name} must be float32 (N, 4), got {boxes.dtype} "
                                  f"{tuple(boxes.shape)}")
            if labels.dtype != torch.int64 or labels.shape != (boxes.shape[0],):
                raise ReslabError(f"labels of image {name} must be int64 ({boxes.shape[0]},), got {labels.dtype} "
                                  f"{tuple(labels.shape)}")
            if self.has_masks:
                masks = t.get("masks")
                if masks is None or masks.dtype != torch.uint8 or tuple(masks.shape) != (boxes.shape[0],
                                                                                          *x.shape[1:]):
                    got = "none" if masks is None else f"{masks.dtype} {tuple(masks.shape)}"
                    raise ReslabError(f"masks of image {name} must be uint8 ({boxes.shape[0]}, {x.shape[1]}, "
                                      f"{x.shape[2]}), got {got}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        sizes = sorted(set(self.sizes))
        shown = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes"
        return (f"DetectionImages({len(self)} images, {shown}, {self.num_instances} instances"
                f"{', masks' if self.has_masks else ''})")

    @property
    def channels(self) -> int:
        """The images' channel count: 3."""
        return 3

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image."""
        return [(int(x.shape[1]), int(x.shape[2])) for x in self.images]

    @property
    def num_instances(self) -> int:
        """The objects (boxes) over all images."""
        return sum(int(t["boxes"].shape[0]) for t in self.targets)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> DetectionImages:
        """The images at ``indices``, in that order (the tensors are shared, not copied; ``image_id``
        keeps each image's index in the full dataset)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return DetectionImages([self.images[i] for i in idx], [self.targets[i] for i in idx],
                               [self.names[i] for i in idx], self.has_masks)
