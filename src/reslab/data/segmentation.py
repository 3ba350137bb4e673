"""Segmentation datasets: images with a class index for every pixel.

Three datasets, each split into :class:`MaskImages` (lists of images and masks, which may differ
in size from image to image):

``isbi2012:PATH``
    The ISBI 2012 EM segmentation challenge's training set, the data of the U-Net paper: 30
    grayscale 512x512 serial-section TEM slices and their labels (255 = cell, 0 = membrane), as
    ``PATH/train/image/N.png`` and ``PATH/train/label/N.png`` (or ``PATH/image``, ``PATH/label``),
    or the challenge's multi-page TIFFs ``PATH/train-volume.tif`` and ``PATH/train-labels.tif``.
    Classes ``["membrane", "cell"]``. The challenge's test labels were never published, so the
    last 5 slices are the test set (fixed); the validation slices (3 by default) are drawn, seeded,
    from the others.
``pennfudan`` / ``pennfudan:PATH``
    The Penn-Fudan pedestrian database (Wang, Shi, Song and Shen, ACCV 2007): 170 street photos of
    differing sizes with instance masks, read as person (any instance) vs background. PATH is
    ``PennFudanPed.zip`` as the authors publish it, a .tar.gz/.tgz of the same tree, or the
    extracted folder; without a path it is looked for in ``data_dir``, ``$RESLAB_DATA`` and the
    cache, then downloaded from the authors' site. Its readme forbids reposting it: reslab never
    ships it. A fixed 20% of the images (a seeded draw that does not move with ``seed``) is the
    test set; the validation images (10% of the rest by default) are drawn with ``seed``.
``segfolder:PATH``
    Your own data: ``PATH/images/<name>.<ext>`` and ``PATH/masks/<name>.png`` paired by file stem
    (or ``PATH/train/images`` and ``PATH/train/masks``), optionally ``PATH/val/`` and
    ``PATH/test/`` with their own ``images/`` and ``masks/``. A mask holds class indices (a
    grayscale or palette PNG; masks whose values are all 0 or 255 are read as 0/1); an optional
    ``PATH/classes.txt`` names the classes, one a line, otherwise they are ``class_0`` ...
    ``class_{K-1}`` up to the largest value found. Without ``val/`` the validation images (10% by
    default) are drawn, seeded, from the training images.

Training batches of random tiles: :class:`~reslab.data.loader.SegLoader` (importable from here too),
its augmentation :mod:`.seg_transforms`.

``image_size`` resizes every image's shorter side to it (bilinear, antialiased) and its mask
alike (nearest neighbour): no crop, the whole image is kept. Hostile input is bounded as
elsewhere (:mod:`.limits`): regular files only, image dimensions checked from the header before
decoding, archive members from their headers before they are read.
"""

from __future__ import annotations

import io
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ..errors import ReslabError
from . import download as dl
from . import limits
from .archive import READ_ERRORS, ArchiveError, archive_members
from .decode import bad_image_error, decode_bytes, decode_file, decoding_pool, open_image
from .listing import IMAGE_EXTENSIONS, is_image_name
from .loader import SegLoader
from .probe import BadImage, check_pixels, not_regular, open_regular, pil_open
from .registry import LoadOptions, register_dataset
from .splits import DatasetSplits, val_count
from .transforms import pil_to_uint8

__all__ = ["MaskImages", "ISBI_CLASSES", "ISBI_TEST_SLICES", "PENNFUDAN_CLASSES", "PENNFUDAN_IMAGES",
           "PENNFUDAN_TEST_FRACTION", "PENNFUDAN_TEST_SEED", "load_isbi2012", "load_pennfudan", "load_segfolder",
           "pennfudan_source", "read_pennfudan", "pennfudan_test_draw",
           "read_mask", "resize_pair", "histogram", "stack_for_normalizer", "report_mask_classes", "SegLoader"]

log = logging.getLogger(__name__)

ISBI_CLASSES = ["membrane", "cell"]
"""ISBI 2012's classes: label 0 (membrane) and 255 (cell interior)."""

ISBI_TEST_SLICES = 5
"""The last slices of the ISBI 2012 training volume held out as the test set."""

PENNFUDAN_CLASSES = ["background", "person"]
"""Penn-Fudan read as semantic masks: instance id 0 is background, any other a person."""

PENNFUDAN_IMAGES = 170
"""Images (and masks) in the authors' ``PennFudanPed.zip``: a download is verified by this count."""

PENNFUDAN_TEST_FRACTION = 0.2
"""The share of Penn-Fudan's images held out as the test set."""

PENNFUDAN_TEST_SEED = 0
"""The seed of Penn-Fudan's test draw: fixed, so the test set is the same whatever ``seed`` a run uses."""

_PENNFUDAN_ARCHIVES = ("PennFudanPed.zip", "PennFudanPed.tar.gz", "PennFudanPed.tgz", "pennfudan.tar.gz",
                       "pennfudan.tgz", "pennfudan.zip")
_MASK_EXTENSIONS = (".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".webp")
_LOSSY = (".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------------
# The container


@dataclass(eq=False)
class MaskImages:
    """A segmentation split held in memory; the images may differ in size.

    Args:
        images: uint8 tensors (C, H, W), C the same for all.
        masks: uint8 tensors (H, W) of class indices, each the size of its image.
        names: One name an image (its file stem, or the slice number), for messages and reports.
    """

    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    names: list[str]

    def __post_init__(self) -> None:
        if not len(self.images) == len(self.masks) == len(self.names):
            raise ReslabError(f"MaskImages needs one mask and one name an image: got {len(self.images)} images, "
                              f"{len(self.masks)} masks, {len(self.names)} names")
        channels = set()
        for x, m, name in zip(self.images, self.masks, self.names):
            if x.dtype != torch.uint8 or x.dim() != 3:
                raise ReslabError(f"image {name} must be a uint8 (C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
            if m.dtype != torch.uint8 or m.dim() != 2:
                raise ReslabError(f"mask {name} must be a uint8 (H, W) tensor, got {m.dtype} {tuple(m.shape)}")
            if tuple(x.shape[1:]) != tuple(m.shape):
                raise ReslabError(f"image {name} is {x.shape[2]}x{x.shape[1]} but its mask is {m.shape[1]}x{m.shape[0]}")
            channels.add(x.shape[0])
        if len(channels) > 1:
            raise ReslabError(f"MaskImages' images must share one channel count, got {sorted(channels)}")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        sizes = sorted(set(self.sizes))
        shown = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes"
        return f"MaskImages({len(self)} images, {shown}, channels={self.channels})"

    @property
    def channels(self) -> int | None:
        """The images' channel count (None when empty)."""
        return self.images[0].shape[0] if self.images else None

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of each image."""
        return [(int(m.shape[0]), int(m.shape[1])) for m in self.masks]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> MaskImages:
        """The images at ``indices``, in that order (the tensors are shared, not copied)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return MaskImages([self.images[i] for i in idx], [self.masks[i] for i in idx], [self.names[i] for i in idx])

    def class_pixels(self, num_classes: int) -> torch.Tensor:
        """int64 (num_classes,): the pixels of each class over all masks (values beyond are not counted)."""
        total = np.zeros(256, dtype=np.int64)
        for m in self.masks:
            total += histogram(m)
        return torch.from_numpy(total[:num_classes].copy())


def histogram(mask: torch.Tensor) -> np.ndarray:
    """int64 (256,): the pixels of each value of a uint8 mask (numpy's bincount: 0.3 ms for 512x512,
    where torch.unique took 90 ms on a busy 2-core machine)."""
    return np.bincount(mask.detach().cpu().numpy().ravel(), minlength=256)


# ---------------------------------------------------------------------------------------------
# Reading images and masks


def _as_index_array(arr: np.ndarray, mode: str, name: str) -> np.ndarray:
    """A decoded mask as a 2-D array of indices; colour masks whose channels agree are accepted."""
    if arr.ndim == 3:
        colour = arr[..., :3] if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr") else arr[..., :1]
        if colour.shape[-1] > 1 and not (colour == colour[..., :1]).all():
            raise ReslabError(f"mask {name} is a colour ({mode}) image; a mask holds one class index a pixel: save "
                              "it as a grayscale or palette PNG of class indices")
        arr = colour[..., 0]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ReslabError(f"mask {name} holds {arr.dtype} values (PIL mode {mode}); a mask holds integer class "
                          "indices: save it as a grayscale or palette PNG")
    if arr.size and (int(arr.max()) > 255 or int(arr.min()) < 0):
        bad = int(arr.max()) if int(arr.max()) > 255 else int(arr.min())
        raise ReslabError(f"mask {name} has value {bad}, outside 0-255; reslab reads class indices 0-255 "
                          "(8-bit masks)")
    return arr


def _mask_of(source: IO[bytes], name: str) -> torch.Tensor:
    try:
        with pil_open(source) as im:
            mode = im.mode
            try:
                arr = np.asarray(im)
            except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
                raise BadImage(str(e) or type(e).__name__) from None
    except BadImage as e:
        raise ReslabError(f"cannot decode mask {name} ({e}); replace or delete the file") from None
    return torch.from_numpy(_as_index_array(arr, mode, name).astype(np.uint8, copy=True))


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask file's class indices: uint8 (H, W), the file's values as they are (a palette PNG's
    indices, not its colours; a 1-bit image as 0/1). Bounded like images (regular files only, pixels
    checked from the header).

    Raises:
        ReslabError: Unreadable, a colour image whose channels differ, or values over 255 (named).
    """
    try:
        f = open_regular(str(path))
    except BadImage as e:
        raise ReslabError(f"cannot read mask {path} ({e}); replace or delete the file") from None
    with f:
        return _mask_of(f, str(path))


def _image_file(path: str, mode: str) -> torch.Tensor:
    return pil_to_uint8(open_image(path, mode))


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (C, H, W) with its shorter side resized to ``size`` (bilinear, antialiased), and its
    ``mask`` (H, W) to the same size by the nearest pixel (torchvision's ``NEAREST_EXACT``: pixel
    centres, aligned with the bilinear grid). Images already that size are returned as they are."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF  # heavy: imported when first needed

    if min(image.shape[-2:]) == size:
        return image, mask
    image = TF.resize(image, [size], antialias=True)
    mask = TF.resize(mask[None], list(image.shape[-2:]), interpolation=InterpolationMode.NEAREST_EXACT)[0]
    return image, mask


def _resized(data: MaskImages, size: int | None) -> MaskImages:
    if size is None:
        return data
    pairs = [resize_pair(x, m, size) for x, m in zip(data.images, data.masks)]
    return MaskImages([p[0] for p in pairs], [p[1] for p in pairs], list(data.names))


def _check_pair(image: torch.Tensor, mask: torch.Tensor, image_name: str, mask_name: str) -> None:
    if tuple(image.shape[1:]) != tuple(mask.shape):
        raise ReslabError(f"image {image_name} is {image.shape[2]}x{image.shape[1]} but its mask {mask_name} is "
                          f"{mask.shape[1]}x{mask.shape[0]}; an image and its mask must be the same size")


# ---------------------------------------------------------------------------------------------
# What every segmentation dataset shares: splits, stats


def _draw(n: int, k: int, seed: int) -> tuple[list[int], list[int]]:
    """(rest, drawn): ``k`` of ``range(n)`` drawn with ``torch.Generator().manual_seed(seed)``, each sorted."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[k:]), sorted(perm[:k])


def _split_val(full: MaskImages, val_size: int | float, seed: int, what: str) -> tuple[MaskImages, MaskImages]:
    """(train, val): ``val_size`` whole images of ``full`` drawn, seeded, as the validation split."""
    n_val = val_count(val_size, len(full), what=what)
    rest, drawn = _draw(len(full), n_val, seed)
    return full.subset(rest), full.subset(drawn)


def _common_size(*splits: MaskImages | None) -> tuple[int, int] | None:
    sizes = {s for split in splits if split is not None for s in split.sizes}
    return next(iter(sizes)) if len(sizes) == 1 else None


def _dataset(name: str, classes: list[str], train: MaskImages, val: MaskImages, test: MaskImages | None,
             info: dict[str, Any], gray: int = 0) -> DatasetSplits:
    channels = train.channels or val.channels or (test.channels if test is not None else None) or 1
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    info.setdefault("skipped", [])
    data = DatasetSplits(name, list(classes), int(channels), _common_size(train, val, test), train, val, test, info)
    data.stats["grayscale"] = gray
    report_mask_classes(data)
    return data


def report_mask_classes(data: DatasetSplits) -> None:
    """Count the training pixels of each class, and the training images that show it, into
    ``data.stats`` (``train_pixels_per_class``, ``train_per_class``, ``imbalance``: the largest
    class's pixels over the smallest's); warn (one line, also kept in ``stats["notes"]``) when a
    class has no training pixels. A skewed pixel share is normal in segmentation (ISBI: 22%
    membrane) and is not warned of."""
    train = data.train
    if not isinstance(train, MaskImages):
        raise TypeError(f"report_mask_classes needs MaskImages splits, got {type(train).__name__}")
    k = len(data.classes)
    pixels = train.class_pixels(k)
    shown = torch.zeros(k, dtype=torch.long)
    for m in train.masks:
        shown += torch.from_numpy(histogram(m)[:k] > 0)
    notes = list(data.stats.get("notes", []))
    data.stats = {"train_per_class": shown.tolist(), "train_pixels_per_class": pixels.tolist(), "imbalance": None,
                  "grayscale": data.stats.get("grayscale", 0), "notes": notes}
    if not len(train):
        return
    if bool((pixels == 0).any()):
        empty = [data.classes[c] for c in range(k) if pixels[c] == 0]
        note = (f"class{'es' * (len(empty) > 1)} {', '.join(map(repr, empty[:5]))}{' ...' * (len(empty) > 5)} "
                f"ha{'ve' if len(empty) > 1 else 's'} no training pixels; add images that show "
                f"{'them' if len(empty) > 1 else 'it'} or a smaller val_size")
        log.warning("%s: %s", data.name, note)
        notes.append(note)
    else:
        data.stats["imbalance"] = round(float(pixels.max()) / float(pixels.min()), 3)


def stack_for_normalizer(data: MaskImages, max_images: int = 64, size: int | None = None) -> torch.Tensor:
    """uint8 (N, C, s, s): centre squares of up to ``max_images`` images (evenly spaced through the
    split), for :meth:`~reslab.data.transforms.Normalizer.fit` with ``kind="per_channel"`` on images
    of different sizes.

    ``s`` is ``size`` where given, at most the smallest side among the chosen images (their pixels
    are copied, never resampled, so the statistics are the images' own). A per-pixel mean
    (``per_pixel_mean``) of such squares means little for whole images of other sizes: use
    ``per_channel`` (or ``none``) for segmentation.
    """
    n = len(data)
    if n == 0:
        raise ReslabError("no images to fit a normalisation to: the training split is empty")
    k = max(1, min(int(max_images), n))
    idx = sorted(set(torch.linspace(0, n - 1, k).round().long().tolist()))
    side = min(min(data.sizes[i]) for i in idx)
    if size is not None:
        side = min(side, int(size))
    out = []
    for i in idx:
        x = data.images[i]
        h, w = x.shape[1:]
        top, left = (h - side) // 2, (w - side) // 2
        out.append(x[:, top:top + side, left:left + side])
    return torch.stack(out).contiguous()


def _absolute(path_text: str, usage: str) -> Path:
    if not path_text:
        raise ReslabError(f"{usage.split(':')[0]} needs a path: {usage}")
    src = Path(path_text).expanduser().absolute()
    if not os.path.lexists(src):
        raise ReslabError(f"{src} does not exist; check the path after '{usage.split(':')[0]}:'")
    return src


def _image_names(folder: Path, what: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, Path]:
    """stem -> path of the image files directly in ``folder``; two files of one stem are refused."""
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not is_image_name(entry.name) or not entry.name.lower().endswith(extensions):
            continue
        stem = Path(entry.name).stem
        if stem in found:
            raise ReslabError(f"{what} {found[stem]} and {entry.path} share the name {stem!r}; images and masks are "
                              "paired by file name without extension: rename or remove one")
        found[stem] = Path(entry.path)
    return found


def _unpaired(images: dict[str, Any], masks: dict[str, Any], image_where: str, mask_where: str,
              mask_name: Callable[[str], str]) -> None:
    """Refuse images without a mask and masks without an image, naming them."""
    lonely = sorted(set(images) - set(masks))
    if lonely:
        more = f" and {len(lonely) - 3} more" if len(lonely) > 3 else ""
        raise ReslabError(f"image{'s' * (len(lonely) > 1)} {', '.join(str(images[s]) for s in lonely[:3])}{more} "
                          f"ha{'ve' if len(lonely) > 1 else 's'} no mask (expected {mask_where}/"
                          f"{mask_name(lonely[0])}); add the mask{'s' * (len(lonely) > 1)} or remove the image"
                          f"{'s' * (len(lonely) > 1)}")
    orphans = sorted(set(masks) - set(images))
    if orphans:
        more = f" and {len(orphans) - 3} more" if len(orphans) > 3 else ""
        raise ReslabError(f"mask{'s' * (len(orphans) > 1)} {', '.join(str(masks[s]) for s in orphans[:3])}{more} "
                          f"ha{'ve' if len(orphans) > 1 else 's'} no image in {image_where}; add the image"
                          f"{'s' * (len(orphans) > 1)} or remove the mask{'s' * (len(orphans) > 1)}")


# ---------------------------------------------------------------------------------------------
# ISBI 2012


def _isbi_label(mask: torch.Tensor, name: str) -> torch.Tensor:
    if bad := [v for v in np.flatnonzero(histogram(mask)).tolist() if v not in (0, 255)]:
        raise ReslabError(f"label {name} has value {bad[0]}; ISBI 2012 labels are 0 (membrane) and 255 (cell): "
                          "check that this is a label image")
    return _binary(mask, 254)


def _tiff_frames(path: Path, what: str, as_mask: bool) -> list[torch.Tensor]:
    """The pages of a multi-page TIFF: (1, H, W) images, or (H, W) masks of the file's values.

    Each page's size is read from its header and checked before it is decoded, and all pages
    together count as one image against ``$RESLAB_MAX_IMAGE_PIXELS``."""
    try:
        with open_regular(str(path)) as f, pil_open(f) as im:
            n = int(getattr(im, "n_frames", 1))
            limit = limits.max_image_pixels()
            total = 0
            frames = []
            for i in range(n):
                im.seek(i)
                check_pixels(im.size)
                total += im.size[0] * im.size[1]
                if total > limit:
                    raise BadImage(f"its {n} pages hold over {limit:,} pixels, the limit that guards against "
                                   f"decompression bombs; raise ${limits.PIXELS_ENV} if the volume is genuine")
                try:
                    frame = np.asarray(im) if as_mask else np.asarray(im.convert("L"))
                except Exception as e:  # PIL raises OSError, SyntaxError, ValueError...
                    raise BadImage(str(e) or type(e).__name__) from None
                if as_mask:
                    frames.append(torch.from_numpy(_as_index_array(frame, im.mode, f"{path} page {i}")
                                                   .astype(np.uint8, copy=True)))
                else:
                    frames.append(torch.from_numpy(frame.copy())[None])
            return frames
    except BadImage as e:
        raise ReslabError(f"cannot decode {what} {path} ({e}); replace it with the challenge's file") from None


def _isbi_source(root: Path) -> tuple[str, Path, Path]:
    for images, labels in ((root / "train" / "image", root / "train" / "label"), (root / "image", root / "label")):
        if images.is_dir() and labels.is_dir():
            return "png", images, labels
    for base in (root, root / "train"):
        volume, labels = base / "train-volume.tif", base / "train-labels.tif"
        if volume.exists() or labels.exists():
            if not volume.exists() or not labels.exists():
                have, lack = (volume, labels) if volume.exists() else (labels, volume)
                raise ReslabError(f"{have} has no partner {lack}; the ISBI 2012 training set is train-volume.tif "
                                  "with train-labels.tif")
            return "tiff", volume, labels
    raise ReslabError(f"{root} holds no ISBI 2012 training set; expected {root}/train/image/N.png with "
                      f"{root}/train/label/N.png (N = 0..29), or {root}/train-volume.tif with train-labels.tif")


def _isbi_pngs(images: Path, labels: Path) -> MaskImages:
    def slices(folder: Path, what: str) -> dict[str, Path]:
        found = _image_names(folder, what)
        if odd := [p for s, p in found.items() if not s.isdigit()]:
            raise ReslabError(f"{what} {odd[0]} is not named by its slice number (N.png, N = 0..29); "
                              f"{folder} holds the ISBI 2012 {what}s 0.png ... 29.png")
        return found

    image_files, label_files = slices(images, "image"), slices(labels, "label")
    if not image_files:
        raise ReslabError(f"no images in {images}; expected the ISBI 2012 slices 0.png ... 29.png")
    _unpaired(image_files, label_files, str(images), str(labels), lambda s: f"{s}.png")
    order = sorted(image_files, key=int)
    with decoding_pool() as pool:
        xs = list(pool.map(lambda s: _image_file(str(image_files[s]), "L"), order))
        ms = list(pool.map(lambda s: _isbi_label(read_mask(label_files[s]), str(label_files[s])), order))
    for s, x, m in zip(order, xs, ms):
        _check_pair(x, m, str(image_files[s]), str(label_files[s]))
    return MaskImages(xs, ms, [str(int(s)) for s in order])


def _isbi_tiffs(volume: Path, labels: Path) -> MaskImages:
    xs = _tiff_frames(volume, "image volume", as_mask=False)
    ms = _tiff_frames(labels, "label volume", as_mask=True)
    if len(xs) != len(ms):
        raise ReslabError(f"{volume} has {len(xs)} slices but {labels} has {len(ms)}; they must match")
    ms = [_isbi_label(m, f"{labels} page {i}") for i, m in enumerate(ms)]
    for i, (x, m) in enumerate(zip(xs, ms)):
        _check_pair(x, m, f"{volume} page {i}", f"{labels} page {i}")
    return MaskImages(xs, ms, [str(i) for i in range(len(xs))])


@register_dataset("isbi2012", aliases=("isbi",), takes_path=True, task="segment", default_val_size=3,
                  description="ISBI 2012 EM segmentation (the U-Net paper's data): PATH/train/image/N.png and "
                              "PATH/train/label/N.png, or train-volume.tif and train-labels.tif; last 5 slices test")
def load_isbi2012(path: str, options: LoadOptions) -> DatasetSplits:
    root = _absolute(path, "isbi2012:PATH")
    if not root.is_dir():
        raise ReslabError(f"{root} is not a folder; isbi2012:PATH names the folder that holds train/image/ and "
                          "train/label/ (or train-volume.tif and train-labels.tif)")
    root = root.resolve()
    kind, images, labels = _isbi_source(root)
    full = _isbi_pngs(images, labels) if kind == "png" else _isbi_tiffs(images, labels)
    n = len(full)
    if n <= ISBI_TEST_SLICES:
        raise ReslabError(f"{root} has {n} slices; the last {ISBI_TEST_SLICES} are the test set, so at least "
                          f"{ISBI_TEST_SLICES + 1} are needed (the ISBI 2012 training set has 30)")
    full = _resized(full, options.image_size)
    test = full.subset(range(n - ISBI_TEST_SLICES, n))
    train, val = _split_val(full.subset(range(n - ISBI_TEST_SLICES)), options.val_size, options.seed, "isbi2012")
    info = {"root": str(root), "source": "folder" if kind == "png" else "tiff", "val_from": "train" if len(val)
            else "none", "test_from": f"last {ISBI_TEST_SLICES} slices"}
    return _dataset(f"isbi2012:{root}", ISBI_CLASSES, train, val, test, info)


# ---------------------------------------------------------------------------------------------
# Penn-Fudan


def _pennfudan_role(name: str) -> tuple[str, str] | None:
    """("image" | "mask", stem) for a Penn-Fudan image or mask path (archive member or file), else None."""
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 2 or not parts[-1].lower().endswith(".png") or parts[-1].startswith("."):
        return None
    stem = parts[-1][:-4]
    if parts[-2] == "PNGImages":
        return "image", stem
    if parts[-2] == "PedMasks" and stem.endswith("_mask"):
        return "mask", stem[:-5]
    return None


def _person_mask(mask: torch.Tensor) -> torch.Tensor:
    return _binary(mask, 0)


def _keep(mask: torch.Tensor) -> torch.Tensor:
    return mask


def _binary(mask: torch.Tensor, below: int) -> torch.Tensor:
    """1 where ``mask`` is over ``below``, else 0 (numpy: torch's elementwise ops took 20 ms a
    500x400 mask on a busy 2-core machine, numpy's 0.2 ms)."""
    return torch.from_numpy((mask.numpy() > below).astype(np.uint8))


def _pennfudan_pairs(images: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], image_names: dict[str, str],
                     mask_names: dict[str, str], where: str) -> MaskImages:
    if not images and not masks:
        raise ReslabError(f"{where} holds no Penn-Fudan images; expected PennFudanPed/PNGImages/<name>.png and "
                          "PennFudanPed/PedMasks/<name>_mask.png")
    _unpaired(image_names, mask_names, f"{where} PNGImages/", f"{where} PedMasks", lambda s: f"{s}_mask.png")
    order = sorted(images)
    for s in order:
        _check_pair(images[s], masks[s], image_names[s], mask_names[s])
    return MaskImages([images[s] for s in order], [masks[s] for s in order], order)


def _rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


def _pennfudan_archive(archive: Path, instances: bool = False) -> MaskImages:
    raw: dict[str, dict[str, tuple[str, bytes]]] = {"image": {}, "mask": {}}  # kind -> stem -> (member, bytes)
    try:
        for name, _, data in archive_members(archive, lambda n: _pennfudan_role(n) is not None):
            role = _pennfudan_role(name)
            if data is not None and role is not None:
                raw[role[0]][role[1]] = (f"{archive}:{name}", data.read())
    except ArchiveError:
        raise
    except READ_ERRORS as e:
        raise ArchiveError(f"archive {archive} is truncated or corrupt ({e}); replace it with a complete copy") from None

    def image(item: tuple[str, bytes]) -> torch.Tensor:
        try:
            return _rgb(decode_bytes(item[1]))
        except BadImage as e:
            raise ReslabError(f"cannot decode image {item[0]} ({e}); replace the archive with a complete copy") from None

    as_mask = _keep if instances else _person_mask
    image_names = {s: member for s, (member, _) in raw["image"].items()}
    mask_names = {s: member for s, (member, _) in raw["mask"].items()}
    _unpaired(image_names, mask_names, f"{archive} PNGImages/", f"{archive} PedMasks", lambda s: f"{s}_mask.png")
    with decoding_pool() as pool:
        images = dict(zip(raw["image"], pool.map(image, raw["image"].values())))
        masks = dict(zip(raw["mask"], pool.map(lambda item: as_mask(_mask_of(io.BytesIO(item[1]), item[0])),
                                               raw["mask"].values())))
    return _pennfudan_pairs(images, masks, image_names, mask_names, str(archive))


def _pennfudan_folder(root: Path, instances: bool = False) -> MaskImages:
    image_files = {s: str(p) for s, p in _image_names(root / "PNGImages", "image", (".png",)).items()}
    mask_files = {stem[:-5]: str(p) for stem, p in _image_names(root / "PedMasks", "mask", (".png",)).items()
                  if stem.endswith("_mask")}
    _unpaired(image_files, mask_files, str(root / "PNGImages"), str(root / "PedMasks"), lambda s: f"{s}_mask.png")
    with decoding_pool() as pool:
        images = dict(zip(image_files, pool.map(lambda p: _image_file(p, "RGB"), image_files.values())))
        as_mask = _keep if instances else _person_mask
        masks = dict(zip(mask_files, pool.map(lambda p: as_mask(read_mask(p)), mask_files.values())))
    return _pennfudan_pairs(images, masks, image_files, mask_files, str(root))


def _pennfudan_tree(folder: Path) -> Path | None:
    """The folder holding PNGImages/ and PedMasks/: ``folder`` itself or its ``PennFudanPed/``."""
    for root in (folder, folder / "PennFudanPed"):
        if (root / "PNGImages").is_dir() and (root / "PedMasks").is_dir():
            return root
    return None


def _count_pennfudan(archive: Path) -> tuple[int, int]:
    """(images, masks) an archive lists, from its member names alone (nothing is decompressed)."""
    counts = {"image": 0, "mask": 0}
    for name, _, _ in archive_members(archive, lambda n: False):
        if (role := _pennfudan_role(name)) is not None:
            counts[role[0]] += 1
    return counts["image"], counts["mask"]


def _verify_download(archive: Path) -> None:
    """The authors publish no checksum of PennFudanPed.zip (none found in torchvision, the
    tutorials or elsewhere): a download is verified by its structure instead, 170 images and 170
    masks read from the archive's index. A bad one is removed so the next run downloads it anew."""
    try:
        counts = _count_pennfudan(archive)
    except READ_ERRORS as e:
        archive.unlink(missing_ok=True)
        raise ArchiveError(f"archive {archive} is truncated or corrupt ({e}); it was removed, run again to download "
                           "it anew") from None
    if counts != (PENNFUDAN_IMAGES, PENNFUDAN_IMAGES):
        archive.unlink(missing_ok=True)
        raise dl.ChecksumError(
            f"{archive.name} is not the Penn-Fudan archive: it lists {counts[0]} images and {counts[1]} masks, not "
            f"{PENNFUDAN_IMAGES} of each; it was removed: run again to download it anew, or fetch "
            f"PennFudanPed.zip by hand and put it in {archive.parent} (or in --data-dir / $RESLAB_DATA)")


def _locate_pennfudan(options: LoadOptions) -> tuple[Path, str]:
    """(archive or folder, source): found in the data directories or the cache, else downloaded."""
    for base, source in dl.search("pennfudan", options.data_dir):
        for folder in (base, base / "pennfudan"):
            for name in _PENNFUDAN_ARCHIVES:
                if (folder / name).is_file():
                    if source == "cache":
                        _verify_download(folder / name)
                    return folder / name, source
            if (tree := _pennfudan_tree(folder)) is not None:
                return tree, source
    if not options.download:
        raise dl.not_found("pennfudan", "PennFudanPed.zip (or the extracted PennFudanPed/ folder)", options.data_dir)
    (resource,) = dl.RESOURCES["pennfudan"]
    archive = dl.fetch(resource, dl.cache_dir() / "pennfudan")
    _verify_download(archive)
    return archive, "download"


@register_dataset("pennfudan", aliases=("penn-fudan", "pennfudanped"), optional_path=True, task="segment",
                  description="Penn-Fudan pedestrians (person vs background masks, 170 photos, downloaded); or "
                              "pennfudan:PATH, the authors' PennFudanPed.zip, a .tar.gz of it, or the folder")
def load_pennfudan(path: str, options: LoadOptions) -> DatasetSplits:
    src, source, name = pennfudan_source(path, options)
    full = _resized(read_pennfudan(src), options.image_size)
    rest_idx, test_idx = pennfudan_test_draw(len(full), src)
    train, val = _split_val(full.subset(rest_idx), options.val_size, options.seed, name)
    info = {"root": str(src), "source": source, "val_from": "train" if len(val) else "none",
            "test_from": f"a fixed {PENNFUDAN_TEST_FRACTION:.0%} of the images (seed {PENNFUDAN_TEST_SEED})"}
    return _dataset(name, PENNFUDAN_CLASSES, train, val, full.subset(test_idx), info)


def pennfudan_source(path: str, options: LoadOptions) -> tuple[Path, str, str]:
    """(archive or folder, source, dataset name) of ``pennfudan`` (``path`` empty: found in the data
    directories or the cache, else downloaded and verified) or ``pennfudan:PATH``.

    Raises:
        ReslabError: A path that is neither an archive nor a folder holding the Penn-Fudan tree; not
            found offline; a failed or wrong download.
    """
    if path:
        src = _absolute(path, "pennfudan:PATH")
        st = src.stat()
        if stat.S_ISDIR(st.st_mode):
            tree = _pennfudan_tree(src)
            if tree is None:
                raise ReslabError(f"{src} holds no Penn-Fudan tree; expected {src}/PennFudanPed/PNGImages/ and "
                                  "PedMasks/ (or PNGImages/ and PedMasks/ in the folder itself)")
            src = tree
        elif not stat.S_ISREG(st.st_mode) or not dl.is_archive(src):
            what = not_regular(st.st_mode) if not stat.S_ISREG(st.st_mode) else "not a .zip/.tar.gz/.tgz archive"
            raise ReslabError(f"{src} is {what}; pennfudan:PATH names PennFudanPed.zip, a .tar.gz of it, or the "
                              "extracted folder")
        src, source = src.resolve(), "archive" if src.is_file() else "folder"
        name = f"pennfudan:{src}"
    else:
        src, source = _locate_pennfudan(options)
        name = "pennfudan"
    return src, source, name


def read_pennfudan(src: Path, *, instances: bool = False) -> MaskImages:
    """All Penn-Fudan images of an archive or folder (:func:`pennfudan_source`), sorted by name, with
    their masks: person (1) vs background (0), or with ``instances`` the authors' instance ids as
    they are (0 background, 1..N one a person)."""
    return _pennfudan_archive(src, instances) if src.is_file() else _pennfudan_folder(src, instances)


def pennfudan_test_draw(n: int, where: str | os.PathLike) -> tuple[list[int], list[int]]:
    """(rest, test): Penn-Fudan's fixed test draw of :data:`PENNFUDAN_TEST_FRACTION` of ``n`` images
    (seed :data:`PENNFUDAN_TEST_SEED`, whatever seed a run uses), each sorted.

    Raises:
        ReslabError: Too few images (in ``where``) to leave any to train on.
    """
    n_test = round(PENNFUDAN_TEST_FRACTION * n)
    if n - n_test < 1:
        raise ReslabError(f"{where} holds {n} image(s): too few to hold out a test set and train on")
    return _draw(n, n_test, PENNFUDAN_TEST_SEED)


# ---------------------------------------------------------------------------------------------
# Your own folders


_SEGFOLDER_LAYOUT = ("PATH/images/<name>.<ext> with PATH/masks/<name>.png (or PATH/train/images and "
                     "PATH/train/masks; optional PATH/val/ and PATH/test/ alike)")


def _segfolder_splits(root: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (images folder, masks folder)."""
    def pair(base: Path) -> tuple[Path, Path] | None:
        images, masks = base / "images", base / "masks"
        if images.is_dir() != masks.is_dir():
            have, lack = (images, masks) if images.is_dir() else (masks, images)
            raise ReslabError(f"{have} has no partner folder {lack}; segfolder expects {_SEGFOLDER_LAYOUT}")
        return (images, masks) if images.is_dir() else None

    top, train = pair(root), pair(root / "train")
    if top and train:
        raise ReslabError(f"{root} has both images/ and train/images/; keep the training images in one of them")
    splits = {"train": top or train}
    for name in ("val", "test"):
        splits[name] = pair(root / name)
    if splits["train"] is None:
        if splits["val"] or splits["test"]:
            raise ReslabError(f"{root} has {'/ and '.join(s for s in ('val', 'test') if splits[s])}/ but no training "
                              f"images; segfolder expects {_SEGFOLDER_LAYOUT}")
        raise ReslabError(f"{root} holds no images/ and masks/ folders; segfolder expects {_SEGFOLDER_LAYOUT}")
    return {k: v for k, v in splits.items() if v is not None}


def _read_classes(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReslabError(f"cannot read {path} ({e}); it names the classes, one a line, in UTF-8") from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or any(not n for n in names):
        raise ReslabError(f"{path} has {'an empty line' if names else 'no class names'}; write one class name a line "
                          "(line k names mask value k)")
    if dup := next((n for i, n in enumerate(names) if n in names[:i]), None):
        raise ReslabError(f"{path} names class {dup!r} twice; each line names one class (line k is mask value k)")
    if len(names) < 2:
        raise ReslabError(f"{path} names one class; segmentation needs at least two (e.g. background and object)")
    return names


def _segfolder_split(images_dir: Path, masks_dir: Path, skip_bad: bool, skipped: list[str]
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str], list[str]]:
    image_files = _image_names(images_dir, "image")
    for lossy in (p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() in _LOSSY and not p.name.startswith(".")):
        raise ReslabError(f"mask {lossy} is a JPEG: lossy compression changes class indices at edges; save masks "
                          "as PNG")
    mask_files = _image_names(masks_dir, "mask", _MASK_EXTENSIONS)
    if not image_files and not mask_files:
        raise ReslabError(f"{images_dir} and {masks_dir} hold no images ({', '.join(IMAGE_EXTENSIONS)}); segfolder "
                          f"expects {_SEGFOLDER_LAYOUT}")
    _unpaired({s: str(p) for s, p in image_files.items()}, {s: str(p) for s, p in mask_files.items()},
              str(images_dir), str(masks_dir), lambda s: f"{s}.png")
    def decode(stem: str) -> tuple[torch.Tensor | None, str, torch.Tensor]:
        try:
            x, why = decode_file(str(image_files[stem])), ""
        except BadImage as e:
            x, why = None, str(e)
        return x, why, read_mask(mask_files[stem])

    stems = sorted(image_files)
    with decoding_pool() as pool:
        decoded = list(pool.map(decode, stems))
    xs, ms, names, mask_paths = [], [], [], []
    for stem, (x, why, m) in zip(stems, decoded):
        image_path, mask_path = str(image_files[stem]), str(mask_files[stem])
        if x is None:
            if not skip_bad:
                raise bad_image_error(image_path, why)
            log.warning("skipping undecodable image %s (%s) and its mask", image_path, why)
            skipped.append(image_path)
            continue
        _check_pair(x, m, image_path, mask_path)
        xs.append(x)
        ms.append(m)
        names.append(stem)
        mask_paths.append(mask_path)
    return xs, ms, names, mask_paths


@register_dataset("segfolder", takes_path=True, task="segment",
                  description="your segmentation data: PATH/images/<name> with PATH/masks/<name>.png of class "
                              "indices (optional classes.txt, val/, test/)")
def load_segfolder(path: str, options: LoadOptions) -> DatasetSplits:
    root = _absolute(path, "segfolder:PATH")
    if not root.is_dir():
        raise ReslabError(f"{root} is not a folder; segfolder expects {_SEGFOLDER_LAYOUT}")
    root = root.resolve()
    layout = _segfolder_splits(root)
    classes_file = root / "classes.txt"
    names_given = _read_classes(classes_file) if classes_file.is_file() else None
    skipped: list[str] = []
    read = {split: _segfolder_split(images, masks, options.skip_bad, skipped) for split, (images, masks) in layout.items()}
    all_masks = [(m, p) for _, ms, _, paths in read.values() for m, p in zip(ms, paths)]
    if not read["train"][0]:
        raise ReslabError(f"no training image in {layout['train'][0]} could be decoded; check the files")
    values = np.zeros(256, dtype=np.int64)
    for m, _ in all_masks:
        values += histogram(m)
    present = np.flatnonzero(values).tolist()
    binary = set(present) <= {0, 255} and 255 in present and (names_given is None or len(names_given) == 2)
    if binary:  # 0/255 masks (a thresholded image) read as 0/1
        for _, ms, _, _ in read.values():
            ms[:] = [_binary(m, 254) for m in ms]
        present = [v // 255 for v in present]
    if names_given is not None:
        classes, where = names_given, f"{len(names_given)} classes in {classes_file}"
    else:
        top = max(present)
        if top < 1:
            raise ReslabError(f"every mask under {root} holds only class 0; masks hold class indices 0..K-1 (or 0/255 "
                              "for two classes): check the masks")
        classes, where = [f"class_{k}" for k in range(top + 1)], "the largest value found"
    k = len(classes)
    for _, ms, _, paths in read.values():
        for m, p in zip(ms, paths):
            if (v := int(m.max())) >= k:
                raise ReslabError(f"mask {p} has value {v}, outside the class range 0-{k - 1} ({where}); fix the mask "
                                  f"or {'add the class to classes.txt' if names_given is not None else 'its values'}")
    channels = 3 if any(x.shape[0] == 3 for xs, _, _, _ in read.values() for x in xs) else 1
    gray = sum(x.shape[0] == 1 for xs, _, _, _ in read.values() for x in xs) if channels == 3 else 0
    splits = {split: _resized(MaskImages([_rgb(x) if channels == 3 else x for x in xs], ms, names),
                              options.image_size)
              for split, (xs, ms, names, _) in read.items()}
    name = f"segfolder:{root}"
    if "val" in splits:
        train, val, val_from = splits["train"], splits["val"], "val folder"
    else:
        train, val = _split_val(splits["train"], options.val_size, options.seed, name)
        val_from = "train" if len(val) else "none"
    info = {"root": str(root), "source": "folder", "val_from": val_from, "skipped": skipped,
            "test_from": "test folder" if "test" in splits else "none", "binary_masks": binary}
    data = _dataset(name, classes, train, val, splits.get("test"), info, gray)
    if gray:
        note = f"{gray:,} grayscale images converted to RGB (the others are colour)"
        log.warning("%s: %s", root, note)
        data.stats["notes"].append(note)
    return data
