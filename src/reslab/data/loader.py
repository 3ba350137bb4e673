"""Loaders that make every batch a pure function of (seed, epoch, batch index).

That is what makes resume exact (a resumed run regenerates the same permutation and the same
augmentation from the step it stopped at) and what lets N processes agree on one global batch:
the global batch is drawn and augmented identically everywhere, and rank r takes its slice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import torch

from ..errors import ReslabError
from .regularize import BatchRegularizer, image_seeds, per_image, policy_transform
from .seg_transforms import IMAGE_MODES, random_tile
from .transforms import Normalizer, lighting, pad_crop_flip

if TYPE_CHECKING:
    from .segmentation import MaskImages

__all__ = ["TensorLoader", "FileLoader", "SegLoader", "batch_generator", "epoch_permutation", "epoch_order",
           "sample_generator"]


def _mix(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch, 1)))


def epoch_order(labels: torch.Tensor, seed: int, epoch: int, balanced: bool = False) -> torch.Tensor:
    """The training order of one epoch: ``len(labels)`` indices, a pure function of (labels, seed, epoch).

    Not balanced: :func:`epoch_permutation`, each image once. Balanced: drawn with replacement, each
    image with probability inversely proportional to the size of its class (a class, then an image
    of it, each uniformly): the distribution of torch's ``WeightedRandomSampler(1 / count[label],
    len(labels), replacement=True)``, seeded by (seed, epoch) so that resume and every rank agree.
    """
    n = len(labels)
    if not balanced or n == 0:
        return epoch_permutation(n, seed, epoch)
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()  # classes with images: the others are never drawn
    starts = torch.cumsum(counts, 0) - counts
    gen = torch.Generator().manual_seed(_mix(seed, epoch, 4))
    cls = present[torch.randint(len(present), (n,), generator=gen)]
    within = (torch.rand(n, generator=gen, dtype=torch.float64) * counts[cls]).long().clamp_max(counts[cls] - 1)
    return by_class[starts[cls] + within]


def batch_generator(seed: int, epoch: int, batch: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(_mix(seed, epoch, batch, 2))
    return gen


class _Batches:
    """What both loaders share: the epoch, the number of batches, each rank's slice of a global batch."""

    batch_size: int
    train: bool
    rank: int
    world_size: int
    epoch: int

    def _num_samples(self) -> int:
        raise NotImplementedError

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self._num_samples()
        if self.train:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def _slice(self, start: int, stop: int) -> tuple[int, int]:
        """This rank's part of the global batch [start, stop)."""
        if self.world_size == 1:
            return start, stop
        size = stop - start
        per = -(-size // self.world_size)
        lo = min(start + self.rank * per, stop)
        return lo, min(lo + per, stop)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate(0)


class TensorLoader(_Batches):
    """Batches of an in-memory uint8 split, normalised and augmented on ``device``.

    Args:
        images, labels: uint8 (N, C, H, W) and int64 (N,).
        batch_size: the GLOBAL batch size; each of ``world_size`` ranks gets an equal slice.
        normalizer: turns uint8 into the network's float input.
        augment: ``"pad_crop_flip"``, ``"crop_flip"`` (same), ``"pad_crop"`` (no mirror images), ``"flip"``
            or ``"none"``.
        train: shuffle each epoch and drop the last incomplete batch.
        policy: ``auto_augment``'s per-image policy on the uint8 images (``"randaugment"``, ...).
        color_jitter: per-image ``v2.ColorJitter`` strength after the policy (0: off).
        regularizer: random erasing and mixup / CutMix of the normalised batch.
        balanced: draw each epoch's images class-balanced, with replacement (:func:`epoch_order`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 normalizer: Normalizer, device: torch.device, train: bool, seed: int = 0,
                 augment: str = "none", pad: int = 4, lighting_std: float = 0.0,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, balanced: bool = False,
                 policy: str = "none", color_jitter: float = 0.0, regularizer: BatchRegularizer | None = None) -> None:
        self.device = torch.device(device)
        self.policy, self.regularizer = policy_transform(policy, color_jitter), regularizer
        self.balanced = balanced
        self._order_labels = labels.cpu()  # epoch_order draws on the CPU, the same on every device
        # Whole small datasets move to the GPU once (CIFAR-10: 150 MB of uint8), so batches never
        # cross the PCIe bus; on the CPU this is a no-op.
        self.images = images.to(self.device) if self.device.type == "cuda" else images
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.normalizer = normalizer.to(self.device)
        self.train = train
        self.seed = seed
        self.augment = augment
        self.pad = pad
        self.lighting_std = lighting_std
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def _num_samples(self) -> int:
        return len(self.labels)

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch from ``start_batch`` on."""
        n = len(self.labels)
        order = epoch_order(self._order_labels, self.seed, self.epoch, self.balanced) if self.train else None
        for b in range(start_batch, len(self)):
            start, stop = b * self.batch_size, min((b + 1) * self.batch_size, n)
            lo, hi = self._slice(start, stop)
            if order is not None:
                idx = order[lo:hi]
                x, y = self.images[idx.to(self.images.device)], self.labels[idx.to(self.labels.device)]
            else:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            x = x.to(self.device, non_blocking=True)
            if self.train and self.policy is not None:
                x = per_image(self.policy, x, image_seeds(_mix(self.seed, self.epoch, b, 6), stop - start, lo - start, len(x)))
            x = self.normalizer(x)
            if self.train and self.augment != "none":
                gen = batch_generator(self.seed, self.epoch, b, self.device)
                x = self._augment_global(x, gen, lo - start, stop - start)
            if self.train and self.regularizer is not None:
                x, y = self.regularizer(x, y, _mix(self.seed, self.epoch, b, 7), lo - start, stop - start)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _augment_global(self, x: torch.Tensor, gen: torch.Generator, offset: int, global_n: int) -> torch.Tensor:
        """Augment as if the whole global batch were here, keep this rank's rows."""
        if self.world_size > 1:
            full = torch.zeros((global_n, *x.shape[1:]), dtype=x.dtype, device=x.device)
            full[offset:offset + len(x)] = x
            return self._augment(full, gen)[offset:offset + len(x)]
        return self._augment(x, gen)

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        crop = self.augment in ("pad_crop_flip", "crop_flip", "pad_crop")
        x = pad_crop_flip(x, self.pad, gen, crop=crop, flip=self.augment != "pad_crop")
        return lighting(x, self.lighting_std, gen, self.normalizer.std)


class _FileDataset(torch.utils.data.Dataset):
    def __init__(self, files, transform: Callable, seed: int, epoch: int, train: bool) -> None:
        self.files, self.transform, self.seed, self.epoch, self.train = files, transform, seed, epoch, train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        rng = random.Random(_mix(self.seed, self.epoch, i, 3)) if self.train else None
        try:
            image = self.files.load(i)
        except ReslabError as e:  # a bad file: raised again, as it is, by the main process
            return _Failed(str(e)), -1
        return self.transform(image, rng), self.files.samples[i][1]


class _Failed(NamedTuple):
    """A worker's user error, carried to the main process (which would otherwise see it wrapped in
    a worker traceback)."""

    message: str


def _collate(items):
    if failed := next((x for x, _ in items if isinstance(x, _Failed)), None):
        return failed
    return torch.stack([i[0] for i in items]), torch.tensor([i[1] for i in items])


class _Slices(torch.utils.data.Sampler):
    def __init__(self, index_batches: list[list[int]]) -> None:
        self.index_batches = index_batches

    def __iter__(self):
        return iter(self.index_batches)

    def __len__(self) -> int:
        return len(self.index_batches)


class FileLoader(_Batches):
    """Batches of a streamed split (:class:`~reslab.data.splits.FileImages`), decoded and
    scale-augmented per image in ``num_workers`` processes, normalised on ``device``.

    Same contract as :class:`TensorLoader`: global batch, rank slices, (seed, epoch, index) seeds.
    """

    def __init__(self, files, batch_size: int, *, transform: Callable, normalizer: Normalizer,
                 device: torch.device, train: bool, seed: int = 0, num_workers: int = 2,
                 lighting_std: float = 0.0, channels_last: bool = False, rank: int = 0,
                 world_size: int = 1, balanced: bool = False, regularizer: BatchRegularizer | None = None) -> None:
        self.files, self.batch_size, self.transform = files, batch_size, transform
        self.regularizer = regularizer
        self.balanced = balanced
        self._order_labels = files.labels if balanced else torch.empty(len(files), dtype=torch.long)
        self.device = torch.device(device)
        self.normalizer = normalizer.to(self.device)
        self.train, self.seed, self.num_workers = train, seed, num_workers
        self.lighting_std, self.channels_last = lighting_std, channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def _num_samples(self) -> int:
        return len(self.files)

    def iterate(self, start_batch: int = 0):
        n = len(self.files)
        order = epoch_order(self._order_labels, self.seed, self.epoch, self.balanced).tolist() if self.train \
            else list(range(n))
        batches = []
        for b in range(start_batch, len(self)):
            lo, hi = self._slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            batches.append(order[lo:hi])
        ds = _FileDataset(self.files, self.transform, self.seed, self.epoch, self.train)
        loader = torch.utils.data.DataLoader(
            ds, batch_sampler=_Slices(batches), num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            collate_fn=_collate,
        )
        for b, batch in enumerate(loader, start=start_batch):
            if isinstance(batch, _Failed):
                raise ReslabError(batch.message)
            x, y = batch
            x = self.normalizer(x.to(self.device, non_blocking=True))
            if self.train and self.lighting_std > 0:
                x = lighting(x, self.lighting_std, batch_generator(self.seed, self.epoch, b, self.device), self.normalizer.std)
            y = y.to(self.device)
            if self.train and self.regularizer is not None:
                start = b * self.batch_size
                lo, _ = self._slice(start, min(start + self.batch_size, n))
                x, y = self.regularizer(x, y, _mix(self.seed, self.epoch, b, 7), lo - start, min(self.batch_size, n - start))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


# ---------------------------------------------------------------------------------------------
# Segmentation: random tiles of images with masks


def sample_generator(seed: int, epoch: int, position: int) -> torch.Generator:
    """The CPU generator of one training sample: the ``position``-th of ``epoch`` (across the global
    batches), so a sample's tile and augmentation do not depend on the rank or the world size."""
    return torch.Generator().manual_seed(_mix(seed, epoch, position, 9))


class SegLoader(_Batches):
    """Training batches of random tiles of a segmentation split (:class:`~reslab.data.segmentation.MaskImages`).

    Each epoch visits ``samples_per_epoch`` images (a seeded permutation, repeated where it is
    larger than the split) and cuts one random tile of each
    (:func:`~reslab.data.seg_transforms.random_tile`): a target tile of ``crop_size - 2 *
    margin`` pixels at a random place, the image tile ``margin`` larger on every side (mirrored
    beyond the image, as is an image smaller than the tile), optionally deformed elastically (the
    U-Net paper: a 3 x 3 grid of N(0, 10 px) displacements, bicubic in between), flipped and
    rotated by quarter turns, image, mask and weights alike. Every draw comes from
    :func:`sample_generator` (seed, epoch, the sample's position in the epoch), so a batch is a
    pure function of (seed, epoch, batch index): :meth:`iterate` from ``start_batch`` resumes
    exactly, and ``world_size`` ranks each cut their own slice of the same global batch.

    Yields ``(x, y)``: ``x`` float32 ``(B, C, crop_size, crop_size)`` on ``device``, normalised by
    ``normalizer``; ``y`` int64 ``(B, T, T)`` class indices, ``T = crop_size - 2 * margin``, or with
    ``weights`` float32 ``(B, 2, T, T)``: channel 0 the class index, channel 1 the pixel's loss weight.

    Args:
        data: The training split.
        batch_size: The GLOBAL batch size; each of ``world_size`` ranks gets an equal slice. The
            last incomplete batch is dropped.
        crop_size: The image tile's side ``S``.
        margin: Pixels the network crops off each side (``model.output_margin``): the target is the
            centre ``S - 2 * margin`` of the tile. 0 for same-padding networks.
        normalizer: Fitted by the caller (:func:`~reslab.data.segmentation.stack_for_normalizer`).
        elastic_sigma: Standard deviation of the coarse displacements in pixels; 0 turns the
            deformation off (tiles are then exact copies of pixels).
        elastic_grid: The coarse grid's nodes a side (the paper: 3).
        image_mode: How a deformed image is interpolated: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
        weights: One float (H, W) loss-weight map an image (the U-Net border weights), deformed and
            cropped with the mask.
        samples_per_epoch: Tiles an epoch (default ``len(data)``).
    """

    def __init__(self, data: MaskImages, batch_size: int, *, crop_size: int, margin: int = 0,
                 normalizer: Normalizer, device: torch.device | str = "cpu", seed: int = 0, flips: bool = True,
                 rot90: bool = True, elastic_sigma: float = 10.0, elastic_grid: int = 3,
                 image_mode: str = "bilinear", weights: list[torch.Tensor] | None = None, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False, samples_per_epoch: int | None = None) -> None:
        if len(data) == 0:
            raise ReslabError("the training split has no images to cut tiles from")
        if batch_size < 1:
            raise ReslabError(f"batch_size must be a positive integer, got {batch_size}")
        if margin < 0 or crop_size - 2 * margin < 1:
            raise ReslabError(f"crop_size {crop_size} with a margin of {margin} px a side leaves no target pixels; "
                              f"use crop_size > {2 * margin}")
        if elastic_sigma < 0 or elastic_grid < 2:
            raise ReslabError(f"elastic_sigma must be >= 0 and elastic_grid >= 2, got {elastic_sigma} and {elastic_grid}")
        if image_mode not in IMAGE_MODES:
            raise ReslabError(f"image_mode must be one of {', '.join(IMAGE_MODES)}, got {image_mode!r}")
        if weights is not None:
            if len(weights) != len(data):
                raise ReslabError(f"weights: one map an image is needed, got {len(weights)} for {len(data)} images")
            for w, m, name in zip(weights, data.masks, data.names):
                if tuple(w.shape) != tuple(m.shape):
                    raise ReslabError(f"the weight map of image {name} is {tuple(w.shape)}, its mask {tuple(m.shape)}")
        self.device = torch.device(device)
        # A dataset of a few hundred images moves to the GPU once (ISBI: 8 MB, Penn-Fudan: 160 MB).
        on_device = self.device.type != "cpu"
        self.images = [x.to(self.device) for x in data.images] if on_device else list(data.images)
        self.masks = [m.to(self.device) for m in data.masks] if on_device else list(data.masks)
        self.weights = None if weights is None else [w.float().to(self.device) for w in weights]
        self.batch_size, self.crop_size, self.margin = batch_size, crop_size, margin
        self.normalizer = normalizer.to(self.device)
        self.seed, self.flips, self.rot90 = seed, flips, rot90
        self.elastic_sigma, self.elastic_grid, self.image_mode = float(elastic_sigma), elastic_grid, image_mode
        self.rank, self.world_size, self.channels_last = rank, world_size, channels_last
        self.samples_per_epoch = len(data) if samples_per_epoch is None else int(samples_per_epoch)
        self.train = True
        self.epoch = 0

    def _num_samples(self) -> int:
        return self.samples_per_epoch

    def order(self) -> torch.Tensor:
        """The images of the current epoch, in order: ``samples_per_epoch`` indices, seeded
        permutations of the split one after the other."""
        n = len(self.images)
        gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, 8))
        rounds = -(-self.samples_per_epoch // n)
        return torch.cat([torch.randperm(n, generator=gen) for _ in range(rounds)])[:self.samples_per_epoch]

    def tile(self, i: int, gen: torch.Generator):
        """One random tile of image ``i`` (:func:`~reslab.data.seg_transforms.random_tile`)."""
        return random_tile(self.images[i], self.masks[i], None if self.weights is None else self.weights[i],
                           size=self.crop_size, margin=self.margin, gen=gen, elastic_sigma=self.elastic_sigma,
                           elastic_grid=self.elastic_grid, flips=self.flips, rot90=self.rot90,
                           image_mode=self.image_mode)

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch from ``start_batch`` on."""
        order = self.order().tolist()
        for b in range(start_batch, len(self)):
            lo, hi = self._slice(b * self.batch_size, (b + 1) * self.batch_size)
            tiles = [self.tile(order[p], sample_generator(self.seed, self.epoch, p)) for p in range(lo, hi)]
            x = self.normalizer(torch.stack([t.image for t in tiles]))
            y = torch.stack([t.mask for t in tiles])
            if self.weights is not None:
                y = torch.stack([y.float(), torch.stack([t.weight for t in tiles if t.weight is not None])], dim=1)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
