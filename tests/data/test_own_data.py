"""Your own data: a CSV of path,label[,split], a folder with labels.json, grayscale/colour mixtures,
class imbalance and the class-balanced sampler. Small real PNG files written with PIL."""

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.cli import main
from reslab.data import FileImages, load_dataset
from reslab.data.loader import FileLoader, TensorLoader, epoch_order, epoch_permutation
from reslab.data.splits import IMBALANCE_RATIO
from reslab.data.transforms import Normalizer
from reslab.errors import ReslabError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


def _image(rng, gray=False, size=8):
    im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return im.convert("L") if gray else im


def _tree(root: Path, counts: dict[str, int], *, seed=0, gray_every=0, size=8) -> list[tuple[str, str]]:
    """``root/<class>/<class>_<k>.png`` for each class; every ``gray_every``-th image grayscale.
    Returns (path relative to root, class) pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            rel = f"{c}/{c}_{k:02d}.png"
            _image(rng, gray=bool(gray_every) and k % gray_every == 0, size=size).save(root / rel)
            out.append((rel, c))
    return out


def _same(a, b):
    assert a.classes == b.classes and a.channels == b.channels and a.image_size == b.image_size
    for split in ("train", "val"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels), split


# --------------------------------------------------------------------------------------------
# CSV and labels.json give what the class-per-folder tree gives


def test_csv_and_labels_json_give_the_class_folder_tensors(tmp_path):
    rows = _tree(tmp_path / "tree", {"cat": 7, "dog": 5, "emu": 4})
    # the CSV in another folder: paths relative to the CSV's folder, one absolute; no header
    (tmp_path / "meta").mkdir()
    lines = [f"../tree/{r},{c}" for r, c in rows]
    lines[3] = f"{tmp_path / 'tree' / rows[3][0]},{rows[3][1]}"
    (tmp_path / "meta" / "list.csv").write_text("\n".join(lines[::-1]) + "\n\n")  # order and blank lines do not matter
    # labels.json over a flat folder: the labels come from the file, not from folder names
    flat = tmp_path / "flat"
    flat.mkdir()
    for r, _ in rows:
        (flat / r.split("/")[1]).write_bytes((tmp_path / "tree" / r).read_bytes())
    (flat / "labels.json").write_text(json.dumps({r.split("/")[1]: c for r, c in rows}))

    tree = load_dataset(f"imagefolder:{tmp_path / 'tree'}", val_size=0.25, seed=1)
    from_csv = load_dataset(f"csv:{tmp_path / 'meta' / 'list.csv'}", val_size=0.25, seed=1)
    from_json = load_dataset(f"imagefolder:{flat}", val_size=0.25, seed=1)
    assert tree.classes == ["cat", "dog", "emu"] and len(tree.train) + len(tree.val) == 16 and len(tree.val) == 4
    _same(tree, from_csv)
    _same(tree, from_json)
    assert from_csv.info["source"] == "csv" and from_json.info["source"] == "labels.json"
    assert from_csv.name == f"csv:{tmp_path / 'meta' / 'list.csv'}"
    # streamed: the same files, labels and pixels
    streamed = load_dataset(f"csv:{tmp_path / 'meta' / 'list.csv'}", val_size=0.25, seed=1, stream=True)
    assert isinstance(streamed.train, FileImages)
    assert torch.equal(streamed.train.labels, tree.train.labels)
    pixels = torch.from_numpy(np.array(streamed.train.load(5))).permute(2, 0, 1)
    assert torch.equal(pixels, tree.train.images[5])


def test_a_header_and_a_split_column(tmp_path):
    rows = _tree(tmp_path, {"a": 6, "b": 6})
    split = lambda k: "test" if k % 3 == 0 else "val" if k % 3 == 1 else "train"  # noqa: E731
    text = "Path, Label, Split\n" + "".join(f"{r},{c},{split(k).upper() if k == 2 else split(k)}\n"
                                            for k, (r, c) in enumerate(rows))
    (tmp_path / "list.csv").write_text(text)
    data = load_dataset(f"csv:{tmp_path / 'list.csv'}")
    assert (len(data.train), len(data.val), len(data.test)) == (4, 4, 4)
    assert data.info["val_from"] == "split column"
    # each split holds the rows that named it, in class order
    assert data.test.labels.tolist() == [0, 0, 1, 1] and data.val.labels.tolist() == [0, 0, 1, 1]
    ref = np.array(Image.open(tmp_path / rows[0][0]))  # row 0 (a_00) is a test image, the first of class a
    assert torch.equal(data.test.images[0], torch.from_numpy(ref).permute(2, 0, 1))


def test_labels_json_per_split_folder(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        rows = _tree(tmp_path / split, {"x": n, "y": n}, seed=n)
        (tmp_path / split / "labels.json").write_text(json.dumps({r: c for r, c in rows}))
    data = load_dataset(f"imagefolder:{tmp_path}", val_size=0)
    assert data.classes == ["x", "y"] and (len(data.train), len(data.test)) == (8, 4)
    assert data.test.labels.tolist() == [0, 0, 1, 1]


def test_images_without_a_label_are_ignored_with_a_warning(tmp_path, caplog):
    rows = _tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "labels.json").write_text(json.dumps({r: c for r, c in rows[1:]}))  # a/a_00.png unlabelled
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"imagefolder:{tmp_path}", val_size=0)
    assert len(data.train) == 5 and data.train.labels.tolist() == [0, 0, 1, 1, 1]
    assert any("ignoring 1 image that has no label (e.g. a/a_00.png)" in r.getMessage() for r in caplog.records)


def test_the_cache_follows_the_labels(tmp_path):
    rows = _tree(tmp_path / "img", {"a": 3, "b": 3})
    csv = tmp_path / "list.csv"
    csv.write_text("".join(f"img/{r},{c}\n" for r, c in rows))
    first = load_dataset(f"csv:{csv}", val_size=0)
    again = load_dataset(f"csv:{csv}", val_size=0)
    assert first.info["decoded"] == 6 and again.info["decoded"] == 0  # a cache hit
    csv.write_text("".join(f"img/{r},{'b' if c == 'a' else 'a'}\n" for r, c in rows))  # labels swapped, images not
    swapped = load_dataset(f"csv:{csv}", val_size=0)
    assert swapped.info["decoded"] == 6
    assert torch.equal(swapped.train.images[:3], first.train.images[3:])  # class a now holds the old b images


def test_skip_bad_leaves_a_missing_image_out(tmp_path, caplog):
    rows = _tree(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "list.csv").write_text("".join(f"{r},{c}\n" for r, c in rows) + "gone.png,a\n")
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"csv:{tmp_path / 'list.csv'}", val_size=0, skip_bad=True)
    assert len(data.train) == 6
    assert any("leaving out 1 missing image" in r.getMessage() and "line 7" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2


def _csv(text):
    return {"list.csv": text}, "csv:{tmp}/list.csv"


def _json(obj):
    return {"d/labels.json": obj if isinstance(obj, str) else json.dumps(obj)}, "imagefolder:{tmp}/d"


BAD = [
    (*_csv("a/a_00.png,a\nb/b_00.png,b\nnope.png,b\n"), "list.csv, line 3: image nope.png does not exist"),
    (*_csv("a/a_00.png,a,train,extra\n"), "list.csv, line 1: expected path,label[,split], got 4 fields"),
    (*_csv("a/a_00.png,a\nb/b_00.png\n"), "list.csv, line 2: expected path,label, got 1 field"),
    (*_csv("a/a_00.png,a,train\nb/b_00.png,b,dev\n"), "list.csv, line 2: split 'dev' is not train, val or test"),
    (*_csv("a/a_00.png,\n"), "list.csv, line 1: the label is empty"),
    (*_csv(""), "list.csv names no images"),
    (*_csv("path,label\n\n"), "list.csv names no images"),
    (*_csv("a/a_00.png,a\na/a_01.png,a\n"), "list.csv has one class (a)"),
    (*_csv("a/a_00.png,a\n./a/a_00.png,b\n"), "list.csv, line 2: image ./a/a_00.png is listed twice"),
    (*_csv("a/a_00.png,a,train\nb/b_00.png,b,train\na/a_01.png,c,test\n"), "list.csv, line 3: class 'c' of the test image"),
    (*_csv("a/a_00.png,a\nb/b_00.png,b\n\"x,y\n"), "list.csv, line 3: not a valid CSV line"),
    (*_csv(b"a/a_00.png,\xff\n"), "list.csv is not UTF-8 text (line 1)"),
    (*_json(["a.png"]), "labels.json must hold a JSON object mapping image paths to class names"),
    (*_json({"a.png": "x", "ghost.png": "y"}), "labels.json, key 'ghost.png': image ghost.png does not exist"),
    (*_json({"a.png": 3}), "labels.json, key 'a.png': the label is 3; labels are class names"),
    (*_json({"../a.png": "x"}), "labels.json, key '../a.png': image paths in labels.json are relative to its folder"),
    (*_json("{\"a.png\": "), "labels.json is not valid JSON (line 1"),
    (*_json({}), "labels.json is an empty mapping"),
    ({"e/train/labels.json": '{"a.png": "x"}', "e/test/notes.txt": ""}, "imagefolder:{tmp}/e",
     "{tmp}/e/test/ has no labels.json while train/ has one"),
    ({"e/labels.json": '{"a.png": "x"}', "e/train/labels.json": "{}"}, "imagefolder:{tmp}/e",
     "{tmp}/e has both labels.json and {tmp}/e/train/labels.json"),
    ({}, "csv:{tmp}/missing.csv", "CSV file {tmp}/missing.csv does not exist"),
    ({}, "csv:{tmp}", "is a folder; csv: names a CSV file"),
]


@pytest.mark.parametrize("files,data,needle", BAD, ids=[b[2][:50] for b in BAD])
def test_bad_label_files_are_one_line_exit_2(tmp_path, capsys, files, data, needle):
    _tree(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "d").mkdir()
    _image(np.random.default_rng(0)).save(tmp_path / "d" / "a.png")
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = ["train", "resnet20", "--data", data.format(tmp=tmp_path), "--iterations", "1", "--no-progress",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle.format(tmp=tmp_path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------
# Grayscale and colour mixed


@pytest.mark.parametrize("stream", [False, True])
def test_a_grayscale_colour_mixture_is_converted_to_rgb_and_reported(tmp_path, caplog, stream):
    rows = _tree(tmp_path, {"a": 6, "b": 6}, gray_every=3)  # a_00, a_03, b_00, b_03: 4 of 12 grayscale
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"imagefolder:{tmp_path}", val_size=0, stream=stream)
    note = "4 of 12 images are grayscale; converted to RGB"
    assert data.channels == 3 and data.stats["grayscale"] == 4 and note in data.stats["notes"]
    assert sum(note in r.getMessage() for r in caplog.records) == 1
    for k, (rel, _) in enumerate(rows):  # val_size=0: the training set in class, then path order
        with Image.open(tmp_path / rel) as im:
            want = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
            gray = im.mode == "L"
        got = (torch.from_numpy(np.array(data.train.load(k))).permute(2, 0, 1) if stream
               else data.train.images[k])
        assert torch.equal(got, want), rel
        if gray:
            assert torch.equal(got[0], got[1]) and torch.equal(got[1], got[2])
    if not stream:  # the cache keeps the count
        again = load_dataset(f"imagefolder:{tmp_path}", val_size=0)
        assert again.info["decoded"] == 0 and note in again.stats["notes"]


def test_a_large_streamed_mixture_is_reported_uncounted(tmp_path, monkeypatch):
    _tree(tmp_path, {"a": 4, "b": 4}, gray_every=2)  # a_00 (grayscale) is read first
    monkeypatch.setattr("reslab.data.imagefolder.PROBE_ALL", 3)  # as over 10,000 images: headers read to the first colour one
    data = load_dataset(f"imagefolder:{tmp_path}", val_size=0, stream=True)
    assert data.channels == 3 and data.stats["grayscale"] is None
    assert data.stats["notes"] == [f"grayscale and colour images are mixed (e.g. {tmp_path / 'a' / 'a_00.png'} is "
                                   "grayscale); grayscale images are converted to RGB as they are loaded"]


def test_a_fifo_named_in_a_csv_is_refused_unopened(tmp_path):
    import os

    rows = _tree(tmp_path, {"a": 2, "b": 2})
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "list.csv").write_text("".join(f"{r},{c}\n" for r, c in rows) + "pipe.png,a\n")
    for stream in (False, True):
        with pytest.raises(ReslabError, match=r"cannot (open|decode) image .*pipe.png \(not a regular file but a FIFO\)"):
            load_dataset(f"csv:{tmp_path / 'list.csv'}", val_size=0, stream=stream)
    assert len(load_dataset(f"csv:{tmp_path / 'list.csv'}", val_size=0, skip_bad=True).train) == 4


def test_all_grayscale_stays_one_channel_without_a_note(tmp_path):
    _tree(tmp_path, {"a": 3, "b": 3}, gray_every=1)
    data = load_dataset(f"imagefolder:{tmp_path}", val_size=0)
    assert data.channels == 1 and data.stats["grayscale"] == 0 and data.stats["notes"] == []


# --------------------------------------------------------------------------------------------
# Class imbalance


def test_imbalance_is_reported_over_the_ratio(tmp_path, caplog):
    _tree(tmp_path / "skewed", {"many": 20, "few": 2})
    _tree(tmp_path / "even", {"x": 6, "y": 5})
    with caplog.at_level(logging.WARNING):
        skewed = load_dataset(f"imagefolder:{tmp_path / 'skewed'}", val_size=0)
    assert skewed.stats["train_per_class"] == [2, 20] and skewed.stats["imbalance"] == 10.0
    warned = [r.getMessage() for r in caplog.records if "imbalanced classes" in r.getMessage()]
    assert len(warned) == 1 and "10.0x" in warned[0] and "'many' (20 training images)" in warned[0]
    assert "--balanced" in warned[0] and warned[0].endswith(skewed.stats["notes"][-1])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        even = load_dataset(f"imagefolder:{tmp_path / 'even'}", val_size=0)
    assert even.stats["train_per_class"] == [6, 5] and even.stats["imbalance"] == 1.2
    assert even.stats["notes"] == [] and not any("imbalanced" in r.getMessage() for r in caplog.records)
    assert IMBALANCE_RATIO == 3.0


# --------------------------------------------------------------------------------------------
# The class-balanced sampler


def test_balanced_order_draws_classes_uniformly():
    labels = torch.tensor([0] * 300 + [1] * 30 + [2] * 6)  # 50:5:1
    n, epochs = len(labels), 30
    drawn = torch.cat([epoch_order(labels, seed=7, epoch=e, balanced=True) for e in range(epochs)])
    assert len(drawn) == n * epochs
    freq = torch.bincount(labels[drawn], minlength=3).double() / len(drawn)
    sd = math.sqrt((1 / 3) * (2 / 3) / len(drawn))
    assert ((freq - 1 / 3).abs() < 5 * sd).all(), freq  # binomial, 5 sigma (seed fixed)
    # within a class uniformly: each of the 6 rare images about 1/18 of the draws
    rare = torch.bincount(drawn[labels[drawn] == 2] - 330, minlength=6).double() / len(drawn)
    assert ((rare - 1 / 18).abs() < 5 * math.sqrt((1 / 18) * (17 / 18) / len(drawn))).all(), rare
    # a pure function of (labels, seed, epoch)
    assert torch.equal(epoch_order(labels, 7, 3, True), epoch_order(labels.clone(), 7, 3, True))
    assert not torch.equal(epoch_order(labels, 7, 3, True), epoch_order(labels, 7, 4, True))
    assert not torch.equal(epoch_order(labels, 7, 3, True), epoch_order(labels, 8, 3, True))
    # unbalanced: the permutation it always was
    assert torch.equal(epoch_order(labels, 7, 3), epoch_permutation(n, 7, 3))
    # a class without images is never drawn
    gap = torch.tensor([0, 0, 2, 2, 2])
    assert set(epoch_order(gap, 0, 0, True).tolist()) <= {0, 1, 2, 3, 4}
    assert torch.bincount(gap[epoch_order(gap, 0, 0, True)], minlength=3)[1] == 0


def _tensor_loader(images, labels, **kw):
    norm = Normalizer.fit("per_pixel_mean", images)
    return TensorLoader(images, labels, 16, normalizer=norm, device="cpu", train=True, seed=5, augment="pad_crop_flip",
                        pad=1, balanced=True, **kw)


def test_balanced_loader_resumes_exactly_and_ranks_slice_one_order():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 6, 6), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0] * 90 + [1] * 10)
    whole, resumed = _tensor_loader(images, labels), _tensor_loader(images, labels)
    ranks = [_tensor_loader(images, labels, rank=r, world_size=2) for r in range(2)]
    for loader in (whole, resumed, *ranks):
        loader.set_epoch(2)
    batches = list(whole)
    assert len(batches) == 100 // 16
    ys = torch.cat([y for _, y in batches])
    assert torch.equal(ys, labels[epoch_order(labels, 5, 2, True)][:len(ys)])
    assert 0.3 < ys.float().mean() < 0.7  # about half the draws from the class of 10 images
    for (x, y), (xr, yr) in zip(batches[2:], resumed.iterate(start_batch=2)):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    for (x, y), (x0, y0), (x1, y1) in zip(batches, *ranks):
        assert torch.equal(torch.cat([y0, y1]), y) and torch.equal(torch.cat([x0, x1]), x)


def test_balanced_file_loader_follows_the_same_order(tmp_path):
    rows = _tree(tmp_path, {"a": 12, "b": 2})
    files = FileImages([(str(tmp_path / r), int(c == "b")) for r, c in rows], channels=3)
    loader = FileLoader(files, 7, transform=lambda im, rng: torch.from_numpy(np.array(im)).permute(2, 0, 1),
                        normalizer=Normalizer("none", torch.zeros(3, 1, 1), torch.ones(3, 1, 1)), device="cpu",
                        train=True, seed=3, num_workers=0, balanced=True)
    loader.set_epoch(1)
    ys = torch.cat([y for _, y in loader])
    assert torch.equal(ys, files.labels[epoch_order(files.labels, 3, 1, True)])


# --------------------------------------------------------------------------------------------
# End to end


def test_train_on_a_csv_with_balanced_sampling(tmp_path, caplog):
    rows = _tree(tmp_path / "img", {"a": 24, "b": 6}, size=16, gray_every=4)
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"img/{r},{c}\n" for r, c in rows))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "resnet20", "--data", f"csv:{tmp_path / 'list.csv'}", "--iterations", "2",
                     "--batch-size", "8", "--balanced", "--recipe", "short_cpu", "--no-progress", "--device", "cpu",
                     "--out", str(out)]) == 0
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "8 of 30 images are grayscale; converted to RGB" in logged and "imbalanced classes" in logged
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["data_stats"]["grayscale"] == 8
    assert start["data_stats"]["train_per_class"] == [22, 5] and start["train"] == 27
    assert "4.4x" in start["data_stats"]["notes"][1]
