"""Super-resolution data: ``sr:PATH``, any folder or archive of photos.

``PATH`` is a folder (searched recursively) or a .zip / .tar / .tar.gz / .tgz archive of one. Every
image is a high-resolution (HR) target; its low-resolution (LR) input is made from it by bicubic
downscaling (:func:`downscale`). Images inside folders that hold masks or labels (a folder whose name
contains ``mask``, such as Penn-Fudan's ``PedMasks/``, or is named ``label(s)``, ``annotation(s)``)
are skipped, and counted in ``info["skipped_labels"]``, so ``sr:PennFudanPed.zip`` uses the 170
photos of ``PNGImages/`` only. Grayscale images are converted to RGB. Images are held in memory as
uint8, whole.

Splits, by the images' sorted paths: a fixed :data:`TEST_FRACTION` (20%) is the test set (a
seeded draw, seed :data:`TEST_SEED`, that does not move with the run's ``seed``: the same images as
the Penn-Fudan segmentation test split); the validation images (``val_size``, 10% of the rest by
default) are drawn from the remaining 80% with the run's seed; the others are the training set.
Validation and test use whole images.

The resize is torch's ``F.interpolate(mode="bicubic", antialias=True)``: the a = -0.5 cubic kernel
that MATLAB's ``imresize`` and PIL's ``BICUBIC`` use, widened by the scale when downscaling
(antialiasing), computed in float and rounded once, as MATLAB does. PIL rounds to 8 bits between its
horizontal and vertical passes: done that way the torch resize equals PIL's to one grey level on a
few pixels (tested), and as it is, within 2 levels of PIL's. Like PIL, and unlike MATLAB's
symmetric padding, it renormalises the kernel at the image border, so the pixels next to the border
differ slightly from MATLAB's (SR papers shave ``scale`` border pixels before measuring). An HR image is first cut to a multiple of
the scale (:func:`modcrop`, the top-left part kept), and its LR image is rounded to 8 bits, as a
saved LR file would be.

Training batches (:class:`SRLoader`): random HR patches of ``crop_size`` pixels with their aligned LR
patches (each training image's LR image is made once, whole), a random one of the 8 flips and
90-degree rotations; VDSR's input is the bicubic upscale of the LR patch (:func:`upscale`).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ReslabError
from .archive import READ_ERRORS, ArchiveError, archive_members, is_archive
from .decode import BadImage, bad_image_error, decode_bytes, decode_file, decoding_pool
from .listing import is_image_path, list_folder
from .loader import _Batches, sample_generator
from .probe import not_regular
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, val_count

__all__ = ["SRImages", "SRLoader", "load_sr", "is_label_path", "modcrop", "downscale", "upscale", "TEST_FRACTION",
           "TEST_SEED", "PATCHES_PER_IMAGE"]

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2
"""The share of an ``sr:PATH`` folder's images held out as the test set."""

TEST_SEED = 0
"""The seed of the test draw: fixed, so the test set does not move with a run's ``seed``."""

PATCHES_PER_IMAGE = 16
"""Training patches an epoch cuts from each training image (EDSR's epoch: 1000 batches of 16 over
DIV2K's 800 images, 20 an image)."""

_LABEL_FOLDERS = ("label", "labels", "annotation", "annotations")


def is_label_path(rel: str) -> bool:
    """True for a file inside a folder of masks or labels: one whose name contains ``mask``
    (``PedMasks/``, ``masks/``) or is ``label(s)`` / ``annotation(s)`` (any case)."""
    folders = rel.replace("\\", "/").split("/")[:-1]
    return any("mask" in f.lower() or f.lower() in _LABEL_FOLDERS for f in folders)


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``x`` (..., H, W) cut to sides that are multiples of ``scale`` (the top-left part kept)."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR image of a uint8 HR image ``(C, H, W)`` or batch ``(N, C, H, W)`` whose sides are
    multiples of ``scale``: bicubic (a = -0.5), antialiased, rounded to uint8."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ReslabError(f"a {w}x{h} image is not a multiple of the scale {scale}; cut it first (modcrop)")
    x = hr[None] if hr.dim() == 3 else hr
    lr = F.interpolate(x.float(), size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    lr = lr.round_().clamp_(0, 255).to(torch.uint8)
    return lr[0] if hr.dim() == 3 else lr


def upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscale (a = -0.5, as :func:`downscale`) of a float ``(N, C, h, w)`` batch by
    ``scale``; not clamped."""
    h, w = lr.shape[-2:]
    return F.interpolate(lr, size=(h * scale, w * scale), mode="bicubic", antialias=True, align_corners=False)


@dataclass(eq=False)
class SRImages:
    """A super-resolution split held in memory: whole RGB photos, which may differ in size.

    Args:
        images: uint8 tensors (3, H, W).
        names: Each image's path inside the dataset (for messages and reports).
        source: Where the images came from (a folder or archive), for messages.
    """

    images: list[torch.Tensor]
    names: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.images) != len(self.names):
            raise ReslabError(f"SRImages needs one name an image: got {len(self.images)} images, {len(self.names)} names")
        for x, name in zip(self.images, self.names):
            if x.dtype != torch.uint8 or x.dim() != 3 or x.shape[0] != 3:
                raise ReslabError(f"image {name} must be a uint8 (3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"SRImages({len(self)} images from {self.source or 'memory'})"

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image."""
        return [(int(x.shape[1]), int(x.shape[2])) for x in self.images]

    def where(self, i: int) -> str:
        """Image ``i`` named for a message: its folder or archive and its path there."""
        if not self.source:
            return self.names[i]
        sep = ":" if is_archive(self.source) else "/"
        return f"{self.source}{sep}{self.names[i]}"

    def subset(self, indices: torch.Tensor | Sequence[int]) -> SRImages:
        """The images at ``indices``, in that order (the tensors are shared, not copied)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return SRImages([self.images[i] for i in idx], [self.names[i] for i in idx], self.source)


# ---------------------------------------------------------------------------------------------
# Reading a folder or an archive


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _decode_all(items: Sequence[tuple[str, Any]], decode: Callable[[Any], torch.Tensor], where: str, skip_bad: bool, skipped: list[str]
                ) -> tuple[list[torch.Tensor], list[str], int]:
    """(RGB images, their names, grayscale count) of ``(name, source)`` items, decoded in a pool."""

    def one(item: tuple[str, Any]) -> tuple[torch.Tensor | None, str]:
        try:
            return decode(item[1]), ""
        except BadImage as e:
            return None, str(e)

    with decoding_pool() as pool:
        decoded = list(pool.map(one, items))
    images, names, gray = [], [], 0
    for (name, _), (x, why) in zip(items, decoded):
        if x is None:
            if not skip_bad:
                raise bad_image_error(f"{where}{name}", why)
            log.warning("skipping undecodable image %s%s (%s)", where, name, why)
            skipped.append(name)
            continue
        gray += x.shape[0] == 1
        images.append(_rgb(x))
        names.append(name)
    return images, names, gray


def _folder(root: Path, skip_bad: bool, skipped: list[str]) -> tuple[list[torch.Tensor], list[str], int, int]:
    found = list_folder(root)
    items, labels = [], 0
    for k, rel in enumerate(found.rels):
        if is_label_path(rel):
            labels += 1
            continue
        if k in found.bad:
            if not skip_bad:
                raise bad_image_error(str(root / rel), found.bad[k], verb="read")
            skipped.append(rel)
            continue
        items.append((rel, str(root / rel)))
    return (*_decode_all(items, decode_file, f"{root}/", skip_bad, skipped), labels)


def _archive(archive: Path, skip_bad: bool, skipped: list[str]) -> tuple[list[torch.Tensor], list[str], int, int]:
    items: list[tuple[str, Any]] = []
    labels = 0
    try:
        for name, is_dir, data in archive_members(archive, lambda n: is_image_path(n) and not is_label_path(n)):
            if data is not None:
                items.append((name, data.read()))
            elif not is_dir and is_image_path(name) and is_label_path(name):
                labels += 1
    except ArchiveError:
        raise
    except READ_ERRORS as e:
        raise ArchiveError(f"archive {archive} is truncated or corrupt ({e}); replace it with a complete copy") from None
    items.sort(key=lambda item: item[0])
    return (*_decode_all(items, decode_bytes, f"{archive}:", skip_bad, skipped), labels)


def _draw(n: int, k: int, seed: int) -> tuple[list[int], list[int]]:
    """(rest, drawn): ``k`` of ``range(n)`` drawn with ``torch.Generator().manual_seed(seed)``, each
    sorted (the draw :mod:`reslab.data.segmentation` makes for Penn-Fudan's test set)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


@register_dataset("sr", aliases=("superres",), takes_path=True, task="restore",
                  description="super-resolution: any folder or .zip/.tar(.gz) archive of photos (mask and label folders "
                              "skipped); a fixed 20% test, LR made by bicubic downscaling")
def load_sr(path: str, options: LoadOptions) -> DatasetSplits:
    if options.image_size is not None:
        raise ReslabError("image_size does not apply to sr:PATH: super-resolution uses the photos at full resolution "
                          "(drop --image-size)")
    if not path:
        raise ReslabError("sr needs a path: sr:PATH, a folder or archive of photos")
    src = Path(path).expanduser().absolute()
    if not os.path.lexists(src):
        raise ReslabError(f"{src} does not exist; check the path after 'sr:'")
    try:
        st = src.stat()
    except OSError as e:
        raise ReslabError(f"cannot read {src} ({e.strerror or e})") from None
    skipped: list[str] = []
    if stat.S_ISDIR(st.st_mode):
        src = src.resolve()
        images, names, gray, labels = _folder(src, options.skip_bad, skipped)
        source = "folder"
    elif stat.S_ISREG(st.st_mode) and is_archive(src):
        src = src.resolve()
        images, names, gray, labels = _archive(src, options.skip_bad, skipped)
        source = "archive"
    else:
        what = not_regular(st.st_mode) if not stat.S_ISREG(st.st_mode) else "not a .zip/.tar/.tar.gz/.tgz archive"
        raise ReslabError(f"{src} is {what}; sr:PATH names a folder of photos or an archive of one")
    if not images:
        more = f" ({labels} images in mask/label folders were skipped)" if labels else ""
        raise ReslabError(f"{src} holds no photos{more}; sr:PATH needs .png/.jpg/... images")
    full = SRImages(images, names, str(src))
    n_test = round(TEST_FRACTION * len(full))
    if len(full) - n_test < 1:
        raise ReslabError(f"{src} holds {len(full)} image(s): too few to hold out a test set and train on")
    rest_idx, test_idx = _draw(len(full), n_test, TEST_SEED)
    rest = full.subset(rest_idx)
    train_idx, val_idx = _draw(len(rest), val_count(options.val_size, len(rest), what=f"sr:{src}"), options.seed)
    train, val, test = rest.subset(train_idx), rest.subset(val_idx), full.subset(test_idx)
    if not len(train):
        raise ReslabError(f"sr:{src}: val_size {options.val_size} leaves no training image; pass a smaller val_size")
    sizes = set(full.sizes)
    notes = []
    if labels:
        notes.append(f"skipped {labels} images in mask/label folders (not photos)")
    if gray:
        notes.append(f"{gray} grayscale images converted to RGB")
    for note in notes:
        log.info("%s: %s", src, note)
    info = {"root": str(src), "source": source, "skipped": skipped, "skipped_labels": labels,
            "counts": {"train": len(train), "val": len(val), "test": len(test)}, "val_from": "train" if len(val) else "none",
            "test_from": f"a fixed {TEST_FRACTION:.0%} of the images (seed {TEST_SEED})"}
    stats = {"grayscale": gray, "notes": notes, "images": len(full)}
    return DatasetSplits(f"sr:{src}", [], 3, next(iter(sizes)) if len(sizes) == 1 else None, train, val, test, info,
                         stats)


# ---------------------------------------------------------------------------------------------
# Training batches


class SRLoader(_Batches):
    """Training batches of random patches of an :class:`SRImages` split.

    Each epoch cuts ``samples_per_epoch`` patches (default :data:`PATCHES_PER_IMAGE` an image):
    the images in seeded permutations, one random HR patch of ``patch`` pixels each (at a position
    that is a multiple of ``scale``) with the aligned LR patch of ``patch // scale`` pixels cut from
    the image's LR image (:func:`downscale` of the whole image, made once), and with ``flips`` one of
    the 8 flips and quarter turns, both alike. Every draw comes from
    :func:`~reslab.data.loader.sample_generator` (seed, epoch, the sample's position), so a batch is
    a pure function of (seed, epoch, batch index): resume is exact and ``world_size`` ranks cut their
    slices of the same global batch.

    Yields ``(x, y)`` float32 on ``device``, in [0, 1]: ``x`` the LR patches ``(B, 3, p, p)`` (with
    ``upscaled_input``, their bicubic upscale ``(B, 3, P, P)``), ``y`` the HR patches ``(B, 3, P, P)``.

    Raises:
        ReslabError: ``patch`` is not a multiple of ``scale``, or a training image (cut to a multiple
            of the scale) is smaller than the patch (the image named).
    """

    def __init__(self, data: SRImages, batch_size: int, *, patch: int, scale: int, upscaled_input: bool = False,
                 device: torch.device | str = "cpu", seed: int = 0, flips: bool = True, rank: int = 0,
                 world_size: int = 1, channels_last: bool = False, samples_per_epoch: int | None = None) -> None:
        if len(data) == 0:
            raise ReslabError("the training split has no images to cut patches from")
        if batch_size < 1:
            raise ReslabError(f"batch_size must be a positive integer, got {batch_size}")
        if scale < 1 or patch < scale or patch % scale:
            below = max(patch // scale * scale, scale)
            raise ReslabError(f"crop_size {patch} (the HR training patch) must be a multiple of the scale {scale}; "
                              f"use {below} or {below + scale}")
        for i, (h, w) in enumerate(data.sizes):
            side = min(h - h % scale, w - w % scale)
            if side < patch:
                fit = side // scale * scale
                hint = f"or train on smaller patches (--crop-size {fit})" if fit >= scale else "it is too small to use"
                raise ReslabError(f"training image {data.where(i)} is {w}x{h}, smaller than the {patch}-pixel training "
                                  f"patch (crop_size); remove it, {hint}")
        self.device = torch.device(device)
        hr = [modcrop(x, scale) for x in data.images]
        lr = [downscale(x, scale) for x in hr]
        on_device = self.device.type != "cpu"
        self.hr = [x.to(self.device) for x in hr] if on_device else hr
        self.lr = [x.to(self.device) for x in lr] if on_device else lr
        self.batch_size, self.patch, self.scale, self.upscaled_input = batch_size, patch, scale, upscaled_input
        self.seed, self.flips, self.rank, self.world_size, self.channels_last = seed, flips, rank, world_size, channels_last
        self.samples_per_epoch = PATCHES_PER_IMAGE * len(data) if samples_per_epoch is None else int(samples_per_epoch)
        self.train = True
        self.epoch = 0

    def _num_samples(self) -> int:
        return self.samples_per_epoch

    def order(self) -> torch.Tensor:
        """The images of the current epoch: ``samples_per_epoch`` indices, seeded permutations of the
        split one after the other."""
        n = len(self.hr)
        gen = sample_generator(self.seed, self.epoch, -1)
        rounds = -(-self.samples_per_epoch // n)
        return torch.cat([torch.randperm(n, generator=gen) for _ in range(rounds)])[:self.samples_per_epoch]

    def sample(self, i: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One random (LR, HR) uint8 patch pair of image ``i``."""
        lr, hr, s = self.lr[i], self.hr[i], self.scale
        p = self.patch // s
        h, w = lr.shape[1:]
        top = int(torch.randint(0, h - p + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - p + 1, (1,), generator=gen))
        x = lr[:, top:top + p, left:left + p]
        y = hr[:, s * top:s * top + self.patch, s * left:s * left + self.patch]
        if self.flips:
            k = int(torch.randint(0, 8, (1,), generator=gen))
            if k & 1:
                x, y = x.flip(-1), y.flip(-1)
            if k & 2:
                x, y = x.flip(-2), y.flip(-2)
            if k & 4:
                x, y = x.transpose(-1, -2), y.transpose(-1, -2)
        return x, y

    def iterate(self, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of the current epoch from ``start_batch`` on."""
        order = self.order().tolist()
        for b in range(start_batch, len(self)):
            lo, hi = self._slice(b * self.batch_size, (b + 1) * self.batch_size)
            pairs = [self.sample(order[q], sample_generator(self.seed, self.epoch, q)) for q in range(lo, hi)]
            x = torch.stack([p[0] for p in pairs]).float().div_(255)
            y = torch.stack([p[1] for p in pairs]).float().div_(255)
            if self.upscaled_input:
                x = upscale(x, self.scale)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
