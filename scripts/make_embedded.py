"""Make reslab's embedded dataset: a stratified, seeded subset of the official Fashion-MNIST files.

    python scripts/make_embedded.py [--source /usr/share/datasets/fashion-mnist]

Reads the four official gzip IDX files (Debian's ``dataset-fashion-mnist`` installs them to the
default ``--source``), checks them against the official md5s, draws ``--train-per-class`` training
and ``--test-per-class`` test images of each class with ``torch.Generator().manual_seed(--seed)``,
and writes, in the same gzip IDX format, the images, the labels and the indices of the chosen
images in the official files, plus README.md and LICENSE. The output is byte-reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from reslab.data import download as dl
from reslab.data.idx import CLASSES, EMBEDDED_DIR, read_checked_idx, write_idx
from reslab.io import atomic_write_text

LICENSE = """\
The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def choose(labels: torch.Tensor, per_class: int, generator: torch.Generator) -> torch.Tensor:
    """``per_class`` random indices of each class, classes in order, each class's indices sorted."""
    picks = []
    for c in range(int(labels.max()) + 1):
        members = (labels == c).nonzero().flatten()
        if len(members) < per_class:
            sys.exit(f"class {c} has only {len(members)} images, fewer than {per_class}")
        picks.append(members[torch.randperm(len(members), generator=generator)[:per_class]].sort().values)
    return torch.cat(picks).sort().values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path(dl.SYSTEM_DIRS["fashion_mnist"][0]))
    parser.add_argument("--out", type=Path, default=EMBEDDED_DIR)
    # 500 + 150 per class keeps the shipped files under 3 MB (about 434 gzipped bytes per image).
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    resources = {r.filename: r for r in dl.RESOURCES["fashion_mnist"]}
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for prefix, per_class in (("train", args.train_per_class), ("t10k", args.test_per_class)):
        images_file, labels_file = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
        images = read_checked_idx(args.source / images_file, resources[images_file])
        labels = read_checked_idx(args.source / labels_file, resources[labels_file]).long()
        chosen = choose(labels, per_class, generator)
        outputs = {
            images_file: images[chosen],
            labels_file: labels[chosen].to(torch.uint8),
            f"{prefix}-indices-idx1-int.gz": chosen.to(torch.int32),
        }
        for name, tensor in outputs.items():
            path = write_idx(args.out / name, tensor)
            rows.append((name, tuple(tensor.shape), path.stat().st_size, hashlib.md5(path.read_bytes()).hexdigest()))

    total = sum(size for _, _, size, _ in rows)
    table = "\n".join(f"| `{name}` | {'x'.join(map(str, shape))} | {size:,} | `{md5}` |" for name, shape, size, md5 in rows)
    sources = "\n".join(f"| `{r.filename}` | `{r.md5}` | `{r.content_md5}` |" for r in resources.values())
    readme = f"""# The embedded dataset: a real subset of Fashion-MNIST

`load_dataset("embedded")` reads these files, so examples and tests run with no network and no
system files. They are a stratified random subset of **Fashion-MNIST** (Xiao, Rasul and Vollgraf,
2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms",
arXiv:1708.07747; <https://github.com/zalandoresearch/fashion-mnist>), kept in the dataset's own
gzip IDX format.

- Training set: {args.train_per_class} images of each of the 10 classes ({10 * args.train_per_class}), drawn
  from the official 60,000 training images.
- Test set: {args.test_per_class} images of each class ({10 * args.test_per_class}), drawn from the official 10,000
  test images.
- Classes (label 0-9): {", ".join(CLASSES["fashion_mnist"])}.
- `*-indices-idx1-int.gz` holds, for each image, its index in the official file, so every image
  can be checked against the original.

Made by `python scripts/make_embedded.py --seed {args.seed} --train-per-class {args.train_per_class} \\
--test-per-class {args.test_per_class}` from the official files as installed by Debian's
`dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist`); the script checks their
md5s after gunzip against the official ones first. It draws each class's images with
`torch.Generator().manual_seed({args.seed})` (classes in order, training set first) and writes
byte-reproducible gzip files.

| official file | md5 as published | md5 after gunzip |
|---|---|---|
{sources}

| file | shape | bytes | md5 |
|---|---|---|---|
{table}

Total: {total:,} bytes.

## Licence

Fashion-MNIST is copyright 2017 Zalando SE and released under the MIT licence; the full text is
in `LICENSE` beside this file and applies to the data files here.
"""
    atomic_write_text(args.out / "README.md", readme)
    atomic_write_text(args.out / "LICENSE", LICENSE)
    print(f"wrote {len(rows)} files, {total:,} bytes, to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
