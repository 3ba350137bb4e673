"""Assemble the own-data image folders of the auto-recipe benchmark from real data on this machine.

    python benchmarks/assemble_folders.py OUT [--shared ../shared]

Writes ``OUT/fashion300`` (Fashion-MNIST, official IDX files: 300 training and 100 test images per
class, 28x28 grayscale PNG: "a few hundred small grayscale images per class") and
``OUT/pennfudan64`` (Penn-Fudan pedestrians: each annotated pedestrian box, squared and resized to
64x64 RGB, against background boxes of the same photos that overlap no pedestrian; photos split
train/test by photo, so no pedestrian is in both). The Penn-Fudan licence forbids reposting:
the folder stays on this machine, never in the repository. ``OUT/cifar10-10k``: the CIFAR-10 JPEG archive's first 1,000
training images of each class (by file name) and its whole 10,000-image test split.
"""

from __future__ import annotations

import argparse
import gzip
import io
import random
import re
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(out: Path, src: Path, per_train: int = 300, per_test: int = 100) -> None:
    for split, prefix, per in (("train", "train", per_train), ("test", "t10k", per_test)):
        images, labels = _idx(src / f"{prefix}-images-idx3-ubyte.gz"), _idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        for c, name in enumerate(FASHION):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == c)[:per]:
                Image.fromarray(images[i], "L").save(folder / f"{i:05d}.png")


def _boxes(annotation: str) -> list[tuple[int, int, int, int]]:
    pat = r"\(Xmin, Ymin\) - \(Xmax, Ymax\) : \((\d+), (\d+)\) - \((\d+), (\d+)\)"
    return [tuple(map(int, m)) for m in re.findall(pat, annotation)]  # type: ignore[misc]


def _square(box: tuple[int, int, int, int], w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    x0, y0 = max(0, min(cx - side // 2, w - side)), max(0, min(cy - side // 2, h - side))
    return x0, y0, x0 + side, y0 + side


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def pennfudan(out: Path, archive: Path, size: int = 64, backgrounds: int = 3, seed: int = 0) -> None:
    rng = random.Random(seed)
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        photos = sorted(n for n in members if n.endswith(".png") and "/PNGImages/" in n)
        for k, name in enumerate(photos):
            split = "test" if k % 5 == 4 else "train"  # every fifth photo is a test photo
            stem = Path(name).stem
            note = tar.extractfile(members[name.replace("PNGImages", "Annotation").replace(".png", ".txt")])
            boxes = _boxes(note.read().decode("latin-1")) if note else []
            raw = tar.extractfile(members[name])
            assert raw is not None
            image = Image.open(io.BytesIO(raw.read())).convert("RGB")
            w, h = image.size
            for j, box in enumerate(boxes):
                folder = out / split / "person"
                folder.mkdir(parents=True, exist_ok=True)
                image.crop(_square(box, w, h)).resize((size, size), Image.BILINEAR).save(folder / f"{stem}_{j}.png")
            made, tries = 0, 0
            while made < backgrounds and tries < 200:
                tries += 1
                side = rng.randint(min(w, h) // 5, min(w, h) // 2)
                x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
                cand = (x0, y0, x0 + side, y0 + side)
                if any(_overlaps(cand, b) for b in boxes):
                    continue
                folder = out / split / "background"
                folder.mkdir(parents=True, exist_ok=True)
                image.crop(cand).resize((size, size), Image.BILINEAR).save(folder / f"{stem}_{made}.png")
                made += 1


def cifar_subset(out: Path, archive: Path, per_train: int = 1000) -> None:
    """The first ``per_train`` training images of each class (by file name) and the whole test split
    of the CIFAR-10 JPEG archive, copied as they are."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        chosen, taken = set(), {}
        for m in sorted(members, key=lambda m: m.name):
            split, cls = Path(m.name).parts[-3:-1]
            if split == "train":
                if taken.get(cls, 0) >= per_train:
                    continue
                taken[cls] = taken.get(cls, 0) + 1
            chosen.add(m.name)
        for m in members:  # in archive order: a gzip stream is read once, front to back
            if m.name in chosen:
                parts = Path(m.name).parts
                dest = out / parts[-3] / parts[-2] / parts[-1]
                dest.parent.mkdir(parents=True, exist_ok=True)
                data = tar.extractfile(m)
                assert data is not None
                dest.write_bytes(data.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    out = Path(args.out)
    fashion(out / "fashion300", Path(args.fashion_dir))
    pennfudan(out / "pennfudan64", Path(args.shared) / "data" / "pennfudan.tar.gz")
    cifar_subset(out / "cifar10-10k", Path(args.shared) / "data" / "cifar10-jpg.tar.gz")
    for d in sorted(out.iterdir()):
        counts = {f"{s.name}/{c.name}": len(list(c.iterdir())) for s in sorted(d.iterdir()) for c in sorted(s.iterdir())}
        print(d.name, counts)


if __name__ == "__main__":
    main()
