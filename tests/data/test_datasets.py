"""Datasets on real files: the official Fashion-MNIST IDX files, image folders of real PNG/JPEG
files made with PIL, archives of them, the validation split and the embedded set."""

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import (
    IMAGE_EXTENSIONS,
    FileImages,
    TensorImages,
    dataset_names,
    load_dataset,
    read_idx,
    stratified_split,
    write_idx,
)
from reslab.data import download as dl
from reslab.data.idx import EMBEDDED_DIR
from reslab.errors import ReslabError

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist (installed by .ci/run)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("RESLAB_CACHE", str(path))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    return path


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fashion-MNIST loaded once from the system files, with the default 5000-image val split."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESLAB_CACHE", str(tmp_path_factory.mktemp("empty-cache")))
        mp.delenv("RESLAB_DATA", raising=False)
        return load_dataset("fashion_mnist", download=False)


# --------------------------------------------------------------------------------------------
# IDX: the official Fashion-MNIST files


def test_fashion_mnist_official_files(fashion):
    assert fashion.info["source"] == "system" and fashion.info["root"] == str(FASHION)
    assert fashion.classes[0] == "T-shirt/top" and fashion.classes[9] == "Ankle boot" and len(fashion.classes) == 10
    assert fashion.channels == 1 and fashion.image_size == (28, 28)
    all_train = torch.cat([fashion.train.labels, fashion.val.labels])
    assert len(all_train) == 60000 and fashion.train.images.shape == (55000, 1, 28, 28)
    assert torch.equal(torch.bincount(all_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(fashion.val.labels), torch.full((10,), 500))  # 5000, stratified
    assert fashion.test.images.shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(fashion.test.labels), torch.full((10,), 1000))
    assert fashion.train.images.dtype == torch.uint8 and fashion.train.images.is_contiguous()
    raw = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10000, 28, 28) and torch.equal(raw, fashion.test.images[:, 0])
    # The IDX header sits in front of the pixels: the first test image starts at byte 16.
    with gzip.open(FASHION / "t10k-images-idx3-ubyte.gz") as f:
        head = f.read(16 + 28 * 28)
    assert head[:4] == b"\x00\x00\x08\x03" and torch.equal(raw[0].flatten(), torch.tensor(list(head[16:])).byte())


def test_idx_round_trip_and_bad_files(tmp_path):
    for array in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([-5, 7, 1 << 20], dtype=np.int32),
                  np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2), np.array([-1, 2], dtype=np.int16)):
        for name in ("a.idx", "a.idx.gz"):
            back = read_idx(write_idx(tmp_path / name, array))
            assert back.numpy().dtype == array.dtype.newbyteorder("=") and np.array_equal(back.numpy(), array)

    path = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(100, dtype=np.uint8))
    data = path.read_bytes()
    assert data[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x64"  # magic, then the length, big-endian
    (tmp_path / "cut").write_bytes(data[:-10])
    with pytest.raises(ReslabError, match=r"cut is truncated: its IDX header promises 100 uint8 values \(108 bytes\) "
                                          r"but it has 98 bytes"):
        read_idx(tmp_path / "cut")
    (tmp_path / "long").write_bytes(data + b"\x00")
    with pytest.raises(ReslabError, match="trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x08\x03" + data[2:])
    with pytest.raises(ReslabError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    gz = gzip.compress(data)
    (tmp_path / "cut.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(ReslabError, match="cut.gz is a truncated or corrupt gzip file"):
        read_idx(tmp_path / "cut.gz")


def test_a_damaged_copy_in_data_dir_is_named(tmp_path):
    data_dir = tmp_path / "fashion-mnist"
    data_dir.mkdir()
    for f in FASHION.iterdir():
        (data_dir / f.name).symlink_to(f)
    (data_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    raw = gzip.decompress((FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (data_dir / "t10k-labels-idx1-ubyte").write_bytes(raw[:-1])  # uncompressed copies are found too
    with pytest.raises(ReslabError, match=r"t10k-labels-idx1-ubyte is not the official t10k-labels-idx1-ubyte"):
        load_dataset("fashion_mnist", data_dir=tmp_path)  # found in the fashion-mnist/ subfolder


# --------------------------------------------------------------------------------------------
# Names and directories


def test_unknown_names_and_directories(tmp_path):
    with pytest.raises(ReslabError, match=r"unknown dataset 'cifar1' \(did you mean 'cifar10'\?\); choose one of "
                                          r"cifar10, cifar100, mnist, fashion_mnist, embedded, imagefolder:PATH"):
        load_dataset("cifar1")
    assert "imagefolder:PATH" in dataset_names() and ".png" in IMAGE_EXTENSIONS
    with pytest.raises(ReslabError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "missing")
    with pytest.raises(ReslabError, match="image_size must be a positive integer"):
        load_dataset("embedded", image_size=0)
    with pytest.raises(ReslabError, match="stream=True applies to imagefolder"):
        load_dataset("embedded", stream=True)
    assert load_dataset("Fashion-MNIST", val_size=0, download=False).name == "fashion_mnist"
    resized = load_dataset("embedded", image_size=32, val_size=np.int64(10))
    assert resized.image_size == (32, 32) and resized.test.images.shape == (1500, 1, 32, 32) and len(resized.val) == 10


# --------------------------------------------------------------------------------------------
# The validation split


def test_stratified_split_counts_determinism_and_disjointness():
    labels = torch.tensor([c for c, n in enumerate([40, 30, 20, 10]) for _ in range(n)])
    labels = labels[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    train, val = stratified_split(labels, 20, seed=0)
    assert torch.equal(torch.bincount(labels[val], minlength=4), torch.tensor([8, 6, 4, 2]))
    assert len(set(train.tolist()) & set(val.tolist())) == 0 and sorted(train.tolist() + val.tolist()) == list(range(100))
    assert torch.equal(stratified_split(labels, 20, seed=0)[1], val)
    assert not torch.equal(stratified_split(labels, 20, seed=1)[1], val)
    assert torch.equal(stratified_split(labels, 0.2, seed=0)[1], val)  # a fraction: the same 20
    # 15 = 6 + 4.5 + 3 + 1.5: the two halves go to the larger remainders, lower class first
    assert torch.bincount(labels[stratified_split(labels, 15, seed=0)[1]], minlength=4).tolist() == [6, 5, 3, 1]
    assert len(stratified_split(labels, 0)[1]) == 0
    for bad, message in ((100, "leaves nothing to train on"), (-1, "negative"), (1.5, r"not a fraction"),
                         (True, "an image count or a fraction")):
        with pytest.raises(ReslabError, match=message):
            stratified_split(labels, bad)


def test_val_split_of_a_dataset_comes_from_train_never_test():
    data = load_dataset("embedded", val_size=300, seed=5)
    assert len(data.val) == 300 and len(data.train) == 4700 and len(data.test) == 1500
    assert torch.equal(torch.bincount(data.val.labels), torch.full((10,), 30))
    flat = lambda t: {bytes(x.flatten().tolist()) for x in t.images}  # noqa: E731
    val, train, test = flat(data.val), flat(data.train), flat(data.test)
    official_train = flat(TensorImages(read_idx(EMBEDDED_DIR / "train-images-idx3-ubyte.gz").unsqueeze(1),
                                       read_idx(EMBEDDED_DIR / "train-labels-idx1-ubyte.gz").long()))
    assert val <= official_train and not val & train and not val & test
    again = load_dataset("embedded", val_size=0.06, seed=5)
    assert torch.equal(again.val.images, data.val.images)
    assert not torch.equal(load_dataset("embedded", val_size=300, seed=6).val.images, data.val.images)
    with pytest.raises(ReslabError, match="val_size=5000 leaves nothing to train on"):
        load_dataset("embedded", val_size=5000)


# --------------------------------------------------------------------------------------------
# The embedded set


def test_embedded_loads_offline_and_is_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path))  # an empty data dir; the package needs nothing
    monkeypatch.setitem(dl.RESOURCES, "fashion_mnist", ())
    data = load_dataset("embedded")
    assert data.info["source"] == "package" and data.channels == 1 and data.image_size == (28, 28)
    assert data.train.images.shape == (4500, 1, 28, 28) and data.test.images.shape == (1500, 1, 28, 28)
    assert torch.equal(torch.bincount(data.train.labels), torch.full((10,), 450))
    assert torch.equal(torch.bincount(data.val.labels), torch.full((10,), 50))  # 10% by default
    assert torch.equal(torch.bincount(data.test.labels), torch.full((10,), 150))
    shipped = [p for p in EMBEDDED_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in shipped) < 3_000_000
    assert {"README.md", "LICENSE"} <= {p.name for p in shipped}
    assert "MIT" in (EMBEDDED_DIR / "LICENSE").read_text()


def test_embedded_images_are_the_official_ones_at_the_recorded_indices():
    for prefix, n in (("train", 5000), ("t10k", 1500)):
        index = read_idx(EMBEDDED_DIR / f"{prefix}-indices-idx1-int.gz").long()
        images = read_idx(EMBEDDED_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(EMBEDDED_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        assert len(index) == n and len(index.unique()) == n
        assert torch.equal(images, read_idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")[index])
        assert torch.equal(labels, read_idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")[index])


# --------------------------------------------------------------------------------------------
# Image folders


def write_images(folder: Path, per_class: dict[str, int], *, size=(6, 5), mode="RGB", fmt="png", start=0):
    """Real image files; each image's pixels encode a unique id. Returns {relative path: (class, array)}."""
    out = {}
    k = start
    for cls, n in per_class.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            h, w = size
            shape = (h, w) if mode == "L" else (h, w, 3)
            array = ((np.arange(np.prod(shape)).reshape(shape) * 7 + k * 13) % 251).astype(np.uint8)
            Image.fromarray(array, mode).save(folder / cls / f"{j:03d}.{fmt}")
            out[f"{cls}/{j:03d}.{fmt}"] = (cls, array)
            k += 1
    return out


def as_chw(array):
    t = torch.from_numpy(np.array(array))
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def test_imagefolder_splits_pixels_and_labels(tmp_path):
    root = tmp_path / "pets"
    train = write_images(root / "train", {"dog": 6, "cat": 4, "emu": 5})
    test = write_images(root / "test", {"cat": 2, "dog": 3}, start=100)
    data = load_dataset(f"imagefolder:{root}", val_size=5, seed=1)
    assert data.name == f"imagefolder:{root}" and data.classes == ["cat", "dog", "emu"]
    assert data.channels == 3 and data.image_size == (6, 5) and isinstance(data.train, TensorImages)
    assert torch.equal(torch.bincount(data.val.labels, minlength=3), torch.tensor([1, 2, 2]))  # 4:6:5 of 5
    assert data.info["counts"] == {"train": 10, "val": 5, "test": 5} and data.info["val_from"] == "train"
    # The test split is the test folder, in order (class, then file name), pixel for pixel.
    expected = [test[k] for k in sorted(test, key=lambda k: (data.classes.index(test[k][0]), k))]
    assert torch.equal(data.test.images, torch.stack([as_chw(a) for _, a in expected]))
    assert data.test.labels.tolist() == [0, 0, 1, 1, 1]
    # Train and val together are the train folder, each image with its own label.
    seen = {bytes(x.flatten().tolist()): int(y) for split in (data.train, data.val)
            for x, y in zip(split.images, split.labels)}
    assert seen == {bytes(as_chw(a).flatten().tolist()): data.classes.index(c) for c, a in train.values()}


def test_imagefolder_is_decoded_once_then_cached(tmp_path, cache):
    root = tmp_path / "flat"
    files = write_images(root, {"a": 3, "b": 3}, fmt="jpg")
    first = load_dataset(f"imagefolder:{root}", val_size=0)
    assert first.info["decoded"] == 6 and first.test is None
    cache_file = Path(first.info["cache_file"])
    assert cache_file.is_file() and cache_file.parent.parent.parent == cache
    second = load_dataset(f"imagefolder:{root}", val_size=0)
    assert second.info["decoded"] == 0 and second.info["cache_file"] == str(cache_file)
    assert torch.equal(second.train.images, first.train.images) and torch.equal(second.train.labels, first.train.labels)
    # JPEG pixels as PIL decodes them
    pil = np.asarray(Image.open(root / "a" / "000.jpg").convert("RGB"))
    assert torch.equal(first.train.images[0], as_chw(pil))
    # A changed file changes the fingerprint: decoded again, and the stale cache entry is gone.
    some = root / next(iter(files))
    os.utime(some, ns=(some.stat().st_atime_ns, some.stat().st_mtime_ns + 10**9))
    third = load_dataset(f"imagefolder:{root}", val_size=0)
    assert third.info["decoded"] == 6 and not cache_file.exists() and Path(third.info["cache_file"]).is_file()


def test_corrupt_image_is_named_or_skipped(tmp_path):
    root = tmp_path / "bad"
    write_images(root, {"a": 4, "b": 4})
    good = (root / "b" / "002.png").read_bytes()
    (root / "b" / "002.png").write_bytes(good[: len(good) // 2])
    (root / "a" / "notes.txt").write_text("not an image, not listed")
    with pytest.raises(ReslabError, match=r"cannot decode image .*b/002\.png .*skip_bad=True"):
        load_dataset(f"imagefolder:{root}")
    data = load_dataset(f"imagefolder:{root}", skip_bad=True, val_size=0)
    assert len(data.train) == 7 and data.info["skipped"] == [str(root / "b" / "002.png")]
    assert torch.equal(torch.bincount(data.train.labels), torch.tensor([4, 3]))
    with pytest.raises(ReslabError, match=r"002\.png"):  # the cached result remembers the bad file
        load_dataset(f"imagefolder:{root}")


def test_mixed_sizes_are_streamed(tmp_path):
    root = tmp_path / "mixed"
    write_images(root, {"a": 3}, size=(8, 6))
    write_images(root, {"b": 3}, size=(5, 9), start=10)
    data = load_dataset(f"imagefolder:{root}", val_size=2)
    assert isinstance(data.train, FileImages) and isinstance(data.val, FileImages) and data.image_size is None
    assert len(data.train) == 4 and sorted(data.val.labels.tolist()) == [0, 1]
    image = data.train.load(0)
    assert image.mode == "RGB" and image.size in ((6, 8), (9, 5))
    with pytest.raises(ReslabError, match=r"differ in size .*pass image_size"):
        load_dataset(f"imagefolder:{root}", stream=False)
    square = load_dataset(f"imagefolder:{root}", image_size=4, val_size=0)
    assert isinstance(square.train, TensorImages) and square.train.images.shape == (6, 3, 4, 4)
    streamed = load_dataset(f"imagefolder:{root}", stream=True, image_size=4, val_size=0)
    assert streamed.train.load(5).size == (4, 4)
    (root / "b" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    broken = load_dataset(f"imagefolder:{root}", stream=True, val_size=0, skip_bad=True)
    assert broken.info["skipped"] == [str(root / "b" / "001.png")] and len(broken.train) == 5


def test_grayscale_gives_one_channel_and_colour_wins(tmp_path):
    root = tmp_path / "gray"
    files = write_images(root, {"x": 2, "y": 2}, mode="L")
    data = load_dataset(f"imagefolder:{root}", val_size=0)
    assert data.channels == 1 and data.train.images.shape == (4, 1, 6, 5)
    assert torch.equal(data.train.images[0], as_chw(files["x/000.png"][1]))
    write_images(root, {"z": 1}, mode="RGB", start=50)
    mixed = load_dataset(f"imagefolder:{root}", val_size=0)
    assert mixed.channels == 3 and torch.equal(mixed.train.images[0], as_chw(files["x/000.png"][1]).expand(3, -1, -1))
    streamed = load_dataset(f"imagefolder:{root}", val_size=0, stream=True)
    assert streamed.channels == 3 and streamed.train.load(0).mode == "RGB"


def test_val_folder_is_used(tmp_path):
    root = tmp_path / "three"
    write_images(root / "train", {"a": 3, "b": 3})
    write_images(root / "val", {"a": 1, "b": 1}, start=20)
    data = load_dataset(f"imagefolder:{root}", val_size=0.5)
    assert data.info["val_from"] == "val folder" and len(data.train) == 6 and len(data.val) == 2 and data.test is None


def test_archives_are_read_in_place_or_extracted_to_stream(tmp_path, cache):
    tree = tmp_path / "tree"
    write_images(tree / "cifar" / "train", {"cat": 3, "dog": 2}, fmt="jpg")
    write_images(tree / "cifar" / "test", {"cat": 1, "dog": 1}, fmt="jpg", start=9)
    folder = load_dataset(f"imagefolder:{tree}", val_size=0)  # looks through the wrapping folder

    tgz = tmp_path / "cifar.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tree / "cifar", arcname="cifar")
    zipped = tmp_path / "cifar.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for p in sorted((tree / "cifar").rglob("*.jpg")):
            zf.write(p, p.relative_to(tree / "cifar"))  # no wrapping folder this time
    for archive in (tgz, zipped):
        data = load_dataset(f"imagefolder:{archive}", val_size=0)
        assert data.info["source"] == "archive" and data.info["decoded"] == 7
        assert data.classes == ["cat", "dog"] and len(data.test) == 2
        assert torch.equal(data.train.images, folder.train.images) and torch.equal(data.test.images, folder.test.images)
        assert load_dataset(f"imagefolder:{archive}", val_size=0).info["decoded"] == 0
    assert not (cache / "imagefolder" / "extracted").exists()  # in-memory sets need no extraction

    streamed = load_dataset(f"imagefolder:{tgz}", stream=True, val_size=0)
    extracted = list((cache / "imagefolder" / "extracted").iterdir())
    assert len(extracted) == 1 and not extracted[0].name.startswith(".")
    assert all(Path(p).is_relative_to(extracted[0]) for p, _ in streamed.train.samples)
    assert np.array_equal(np.asarray(streamed.test.load(1)), folder.test.images[1].permute(1, 2, 0).numpy())

    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    with pytest.raises(dl.ArchiveError, match=r"cut\.tar\.gz is truncated or corrupt"):
        load_dataset(f"imagefolder:{cut}")
    with pytest.raises(dl.ArchiveError, match=r"cut\.tar\.gz is truncated or corrupt"):
        load_dataset(f"imagefolder:{cut}", stream=True)
    assert cut.exists() and len(list((cache / "imagefolder" / "extracted").iterdir())) == 1  # nothing half-done


def test_bad_image_folders(tmp_path):
    def fails(path, match):
        with pytest.raises(ReslabError, match=match):
            load_dataset(f"imagefolder:{path}")

    fails(tmp_path / "nope", "does not exist")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "is empty")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (4, 4)).save(loose / "one.png")
    fails(loose, r"has no class folders \(it has 1 images outside class folders")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "readme.txt").write_text("x")
    fails(tmp_path / "noimg", r"no images \(\.jpg")
    write_images(tmp_path / "notrain" / "test", {"a": 1})
    fails(tmp_path / "notrain", "has test/ but no train/")
    write_images(tmp_path / "extra" / "train", {"a": 1})
    write_images(tmp_path / "extra" / "test", {"a": 1, "zebra": 1})
    fails(tmp_path / "extra", r"test/ has class folders \['zebra'\] that train/ lacks")
    (tmp_path / "file.txt").write_text("x")
    fails(tmp_path / "file.txt", "neither a folder nor")
    with pytest.raises(ReslabError, match="needs a path"):
        load_dataset("imagefolder:")


def test_file_images_load_names_a_corrupt_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ReslabError, match=r"cannot decode image .*x\.png"):
        FileImages([(str(tmp_path / "x.png"), 0)], 3).load(0)
    assert len(FileImages([(str(tmp_path / "x.png"), 0)], 3).subset([])) == 0


SHARED_CIFAR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason=f"{SHARED_CIFAR} (the shared CIFAR-10 JPEG folder) is absent")
def test_real_cifar10_jpeg_archive(tmp_path):
    """The real archive's layout (5000/1000 per class), and real CIFAR-10 JPEGs decoded as PIL does.

    Decoding all 60,000 takes 10-20 s here, so a real subset is repacked: 10 train and 3 test images
    of each class. (Timings of the full archive are measured outside the test suite.)
    """
    counts: dict[tuple[str, str], int] = {}
    picked: dict[str, bytes] = {}
    with tarfile.open(SHARED_CIFAR, "r|gz") as tf:
        for member in tf:
            if not member.isfile():
                continue
            split, cls, _ = member.name.split("/")
            counts[split, cls] = counts.get((split, cls), 0) + 1
            if counts[split, cls] <= (10 if split == "train" else 3):
                picked[member.name] = tf.extractfile(member).read()
    classes = sorted({cls for _, cls in counts})
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert counts == {**{("train", c): 5000 for c in classes},
                                                 **{("test", c): 1000 for c in classes}}
    small = tmp_path / "cifar-subset.tar.gz"
    with tarfile.open(small, "w:gz") as tf:
        for name, data in picked.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

    data = load_dataset(f"imagefolder:{small}", val_size=0)
    assert data.classes == classes and data.channels == 3 and data.image_size == (32, 32)
    assert len(data.train) == 100 and len(data.test) == 30
    for split, images, labels in (("train", data.train.images, data.train.labels),
                                  ("test", data.test.images, data.test.labels)):
        names = sorted((n for n in picked if n.startswith(split + "/")), key=lambda n: (n.split("/")[1], n))
        for name, image, label in zip(names, images, labels, strict=True):
            pil = np.array(Image.open(io.BytesIO(picked[name])).convert("RGB"))
            assert torch.equal(image, as_chw(pil)), name
            assert classes[int(label)] == name.split("/")[1]
