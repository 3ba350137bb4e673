"""Detection datasets and their loader: Penn-Fudan read for detection (tiny synthetic trees in the
authors' layout, a download from a local HTTP server, and the real archive where present),
COCO-format JSON checked against pycocotools' own COCO API, every bad input named in one line,
and DetLoader's flips and scale jitter moving boxes and masks with the image, reproducibly."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from reslab.data import DetectionImages, DetLoader, get_dataset_entry, load_dataset
from reslab.data import download as dl
from reslab.data import segmentation as seg
from reslab.data.detection import _boxes_on_device, boxes_from_masks
from reslab.errors import ReslabError

from .conftest import isolated_cache

PENNFUDAN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pennfudan.tar.gz"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    return isolated_cache(tmp_path, monkeypatch)


def box_of(mask: np.ndarray) -> list[float]:
    """The box of a 0/1 mask at pixel edges, by hand."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def test_boxes_from_masks_at_pixel_edges():
    masks = torch.zeros(4, 9, 11, dtype=torch.uint8)
    masks[0, 2:5, 3:8] = 1
    masks[1, 8, 10] = 1  # one pixel in the corner
    masks[2, 0:9, 0] = 1
    masks[2, 4, 6] = 1
    want = [[3, 2, 8, 5], [10, 8, 11, 9], [0, 0, 7, 9], [0, 0, 0, 0]]  # the empty mask: zeros
    assert boxes_from_masks(masks).tolist() == want and boxes_from_masks(masks).dtype == torch.float32
    assert _boxes_on_device(masks).tolist() == want  # the GPU's path, run here on the CPU
    assert boxes_from_masks(masks[:0]).shape == (0, 4)


# --------------------------------------------------------------------------------------------
# Penn-Fudan for detection: a synthetic tree in the authors' layout


def pf_arrays(n: int = 10, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stem -> (RGB image, instance ids 0..k): k = 1..3 blobs (a rectangle with a notch cut out)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        h, w = int(rng.integers(40, 56)), int(rng.integers(44, 64))
        ids = np.zeros((h, w), np.uint8)
        for k in range(1, int(rng.integers(1, 4)) + 1):
            y0, x0 = int(rng.integers(0, h - 12)), int(rng.integers(0, w - 12))
            y1, x1 = y0 + int(rng.integers(8, min(30, h - y0) + 1)), x0 + int(rng.integers(8, min(24, w - x0) + 1))
            ids[y0:y1, x0:x1] = k
            ids[y0:y0 + 3, x0:x0 + 3] = 0  # a notch: the box is not just the drawn rectangle's
        present = [v for v in range(1, 4) if (ids == v).any()]
        ids = np.searchsorted(np.array([0, *present]), ids).astype(np.uint8)  # ids 1..k, as the authors'
        stem = f"{'FudanPed' if i % 2 else 'PennPed'}{i:05d}"
        out[stem] = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), ids)
    return out


def write_pf(root: Path, arrays) -> Path:
    (root / "PennFudanPed" / "PNGImages").mkdir(parents=True)
    (root / "PennFudanPed" / "PedMasks").mkdir(parents=True)
    for stem, (rgb, ids) in arrays.items():
        Image.fromarray(rgb).save(root / "PennFudanPed" / "PNGImages" / f"{stem}.png")
        Image.fromarray(ids).save(root / "PennFudanPed" / "PedMasks" / f"{stem}_mask.png")
    return root


@pytest.fixture(scope="module")
def pf(tmp_path_factory):
    arrays = pf_arrays()
    return write_pf(tmp_path_factory.mktemp("pf"), arrays), arrays


def test_pennfudan_detection_targets_from_the_instance_ids(pf):
    root, arrays = pf
    data = load_dataset(f"pennfudan:{root}", task="detect", val_size=2)
    assert data.classes == ["background", "person"] and data.channels == 3
    assert data.info["counts"] == {"train": 6, "val": 2, "test": 2} and data.info["source"] == "folder"
    order = sorted(arrays)
    for split in (data.train, data.val, data.test):
        assert isinstance(split, DetectionImages) and split.has_masks
        for name, x, t in zip(split.names, split.images, split.targets):
            rgb, ids = arrays[name]
            assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1))
            k = int(ids.max())
            assert t["labels"].tolist() == [1] * k and int(t["image_id"]) == order.index(name)
            assert torch.equal(t["masks"], torch.from_numpy(np.stack([ids == v for v in range(1, k + 1)]).astype(np.uint8)))
            assert t["boxes"].dtype == torch.float32 and t["boxes"].tolist() == [box_of(ids == v) for v in range(1, k + 1)]
    # the same test and validation images as segmentation's, for the same seed
    segm = load_dataset(f"pennfudan:{root}", val_size=2)
    assert (segm.test.names, segm.val.names) == (data.test.names, data.val.names)
    instances = {s: sum(int(arrays[n][1].max()) for n in getattr(data, s).names) for s in ("train", "val", "test")}
    assert data.stats["images"] == {"train": 6, "val": 2, "test": 2} and data.stats["instances"] == instances
    assert data.stats["train_per_class"] == [0, instances["train"]]
    assert data.stats["instances_per_image"]["train"] == round(instances["train"] / 6, 3)
    assert data.train.subset([1, 0]).names == data.train.names[1::-1] and data.train.sizes[0] == tuple(
        data.train.images[0].shape[1:])


def test_pennfudan_detection_image_size(pf):
    root, arrays = pf
    data = load_dataset(f"pennfudan:{root}", task="detect", val_size=0, image_size=32)
    for name, x, t in zip(data.train.names, data.train.images, data.train.targets):
        assert min(x.shape[1:]) == 32
        ids = np.asarray(Image.fromarray(arrays[name][1]).resize((x.shape[2], x.shape[1]), Image.NEAREST))
        kept = [v for v in range(1, 4) if (ids == v).any()]
        assert torch.equal(t["masks"], torch.from_numpy(np.stack([ids == v for v in kept]).astype(np.uint8)))
        assert t["boxes"].tolist() == [box_of(ids == v) for v in kept]


def test_pennfudan_detection_downloads_like_segmentation(server, monkeypatch, cache, tmp_path):
    www, base = server
    arrays = pf_arrays(6, seed=1)
    tree = write_pf(tmp_path / "pf", arrays)
    with zipfile.ZipFile(www / "PennFudanPed.zip", "w") as zf:
        for f in sorted(tree.rglob("*.png")):
            zf.write(f, f.relative_to(tree).as_posix())
    monkeypatch.setitem(dl.RESOURCES, "pennfudan", (dl.Resource("PennFudanPed.zip", None, (base + "PennFudanPed.zip",)),))
    monkeypatch.setattr(seg, "PENNFUDAN_IMAGES", 6)  # the served archive's count, where the authors' has 170
    data = load_dataset("pennfudan", task="detect", val_size=0)
    assert data.name == "pennfudan" and data.info["source"] == "download"
    assert sorted(data.train.names + data.test.names) == sorted(arrays)
    assert data.stats["instances"]["train"] + data.stats["instances"]["test"] == sum(int(a[1].max())
                                                                                     for a in arrays.values())
    assert load_dataset("pennfudan", task="detect", val_size=0).info["source"] == "cache"


def test_unpaired_pennfudan_files_are_named_in_detection_mode(tmp_path):
    root = write_pf(tmp_path / "a", pf_arrays(3, seed=2))
    stem = sorted(pf_arrays(3, seed=2))[1]
    (root / "PennFudanPed" / "PedMasks" / f"{stem}_mask.png").unlink()
    with pytest.raises(ReslabError, match=rf"image .*PNGImages/{stem}\.png has no mask \(expected "
                                          rf".*PedMasks/{stem}_mask\.png\)"):
        load_dataset(f"pennfudan:{root}", task="detect")
    root = write_pf(tmp_path / "b", pf_arrays(3, seed=2))
    (root / "PennFudanPed" / "PNGImages" / f"{stem}.png").unlink()
    with pytest.raises(ReslabError, match=rf"mask .*PedMasks/{stem}_mask\.png has no image"):
        load_dataset(f"pennfudan:{root}", task="detect")


@pytest.mark.skipif(not PENNFUDAN.is_file(), reason=f"{PENNFUDAN} (the Penn-Fudan archive) is absent")
def test_the_real_pennfudan_archive_for_detection():
    data = load_dataset(f"pennfudan:{PENNFUDAN}", task="detect")
    assert data.info["counts"] == {"train": 122, "val": 14, "test": 34}
    assert sum(data.stats["images"].values()) == 170 and sum(data.stats["instances"].values()) == 423
    for split in (data.train, data.val, data.test):
        for x, t in zip(split.images, split.targets):
            b = t["boxes"]
            assert len(b) >= 1 and bool((b[:, 2:] > b[:, :2]).all()) and float(b.min()) >= 0
            assert bool((b[:, 2] <= x.shape[2]).all() and (b[:, 3] <= x.shape[1]).all())


def test_tasks_a_dataset_does_not_serve(pf):
    with pytest.raises(ReslabError, match=r"dataset cifar10 serves classify, not detect; datasets for detect: "
                                          r"pennfudan, coco:PATH"):
        get_dataset_entry("cifar10").loader_for("detect")
    assert get_dataset_entry("coco:/x").tasks == ("detect",)
    # load_dataset takes the caller's task as a choice among the dataset's own: fit passes its model's
    # task (a style network's is "stylize") and says itself what is wrong with data of another kind
    assert isinstance(load_dataset(f"pennfudan:{pf[0]}", task="stylize", val_size=0).train, seg.MaskImages)


# --------------------------------------------------------------------------------------------
# coco:PATH


def coco_doc(images: list[tuple[int, str, int, int]], anns: list[dict], cats=((3, "cat"), (7, "dog"))) -> dict:
    return {"images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in images],
            "annotations": [{"id": k + 1, "iscrowd": 0, **a} for k, a in enumerate(anns)],
            "categories": [{"id": c, "name": n} for c, n in cats]}


def save_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A folder of 10 images (one beside the JSON, the others in images/) with polygons, a
    compressed and an uncompressed RLE, a crowd annotation, and categories 3 and 7 (labels 1, 2)."""
    root = tmp_path_factory.mktemp("coco")
    images, anns = [], []
    for i in range(10):
        h, w = 30 + i, 40
        name = "beside.png" if i == 0 else f"im{i}.png"
        save_rgb(root / name if i == 0 else root / "images" / name, h, w, i)
        images.append((100 + i, name, h, w))
        anns.append({"image_id": 100 + i, "category_id": 3 if i % 3 else 7, "bbox": [2.0, 3.0, 10.5, 8.0],
                     "segmentation": [[2, 3, 12.5, 3, 12.5, 11, 2, 11]], "area": 84.0})
        blob = np.zeros((h, w), np.uint8, order="F")
        blob[10:20, 20:35] = 1
        rle = mask_utils.encode(blob)
        if i % 2:
            segm = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:  # uncompressed: run lengths, column-major
            flat = blob.ravel(order="F")
            edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
            segm = {"size": [h, w], "counts": np.diff(np.r_[0, edges]).tolist()}
        anns.append({"image_id": 100 + i, "category_id": 7, "bbox": [20, 10, 15, 10], "segmentation": segm})
    anns.append({"image_id": 101, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1,
                 "segmentation": {"size": [31, 40], "counts": [0, 5, 26, 5, 1204]}})
    (root / "train.json").write_text(json.dumps(coco_doc(images, anns)))
    return root


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools 2.0 under numpy 2
def test_coco_json_boxes_masks_and_labels(coco):
    data = load_dataset(f"coco:{coco}", val_size=2)
    assert data.classes == ["background", "cat", "dog"] and data.info["crowd_left_out"] == 1
    assert data.info["counts"] == {"train": 6, "val": 2, "test": 2} and data.info["val_from"] == "train"
    assert data.stats["notes"] == ["1 crowd annotation (iscrowd 1) left out"]
    api = COCO(str(coco / "train.json"))
    by_name = {im["file_name"]: im for im in api.dataset["images"]}
    seen = set()
    for split in (data.train, data.val, data.test):
        assert split.has_masks
        for name, x, t in zip(split.names, split.images, split.targets):
            entry = next(im for f, im in by_name.items() if Path(f).stem == name)
            seen.add(entry["id"])
            assert int(t["image_id"]) == entry["id"] - 100  # its place in train.json
            place = coco / entry["file_name"] if name == "beside" else coco / "images" / entry["file_name"]
            assert torch.equal(x, torch.from_numpy(np.array(Image.open(place))).permute(2, 0, 1))
            anns = [a for a in api.loadAnns(api.getAnnIds(imgIds=entry["id"])) if not a["iscrowd"]]
            assert t["labels"].tolist() == [1 if a["category_id"] == 3 else 2 for a in anns]
            assert t["boxes"].tolist() == [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                            a["bbox"][1] + a["bbox"][3]] for a in anns]
            assert torch.equal(t["masks"], torch.from_numpy(np.stack([api.annToMask(a) for a in anns])))
            assert int(t["masks"][1].sum()) == 150  # the 10 x 15 blob, from both kinds of RLE
    assert seen == set(range(100, 110))
    test_again = load_dataset(f"coco:{coco / 'train.json'}", seed=5).test  # the JSON file itself; seed moves val only
    assert test_again.names == data.test.names


def test_coco_split_files_and_image_size(coco, tmp_path):
    doc = json.loads((coco / "train.json").read_text())
    for split, ids in (("train", range(100, 106)), ("val", range(106, 108)), ("test", range(108, 110))):
        part = {**doc, "images": [im for im in doc["images"] if im["id"] in ids],
                "annotations": [a for a in doc["annotations"] if a["image_id"] in ids]}
        (coco / f"{split}.json").write_text(json.dumps(part))
    try:
        data = load_dataset(f"coco:{coco}", image_size=20)
    finally:
        json_back = json.dumps(doc)
        (coco / "train.json").write_text(json_back)
        (coco / "val.json").unlink()
        (coco / "test.json").unlink()
    assert data.info["counts"] == {"train": 6, "val": 2, "test": 2}
    assert (data.info["val_from"], data.info["test_from"]) == ("val.json", "test.json")
    assert [int(t["image_id"]) for t in data.test.targets] == [8, 9]  # numbered on through the files
    for x, t, name in zip(data.train.images, data.train.targets, data.train.names):
        h = 30 + (0 if name == "beside" else int(name[2:]))
        assert min(x.shape[1:]) == 20 and x.shape[2] == int(20 * 40 / h)
        sx, sy = x.shape[2] / 40, x.shape[1] / h
        assert torch.allclose(t["boxes"][0], torch.tensor([2 * sx, 3 * sy, 12.5 * sx, 11 * sy]), rtol=1e-5)
        assert tuple(t["masks"].shape[1:]) == tuple(x.shape[1:])
        assert boxes_from_masks(t["masks"][1:]).sub(t["boxes"][1:]).abs().max() <= 1  # the blob's edges


def test_coco_boxes_only(tmp_path):
    save_rgb(tmp_path / "a.png", 20, 30, 0)
    save_rgb(tmp_path / "b.png", 20, 30, 1)
    doc = coco_doc([(1, "a.png", 20, 30), (2, "b.png", 20, 30)],
                   [{"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1, 6, 6]]},
                    {"image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5]}], cats=((7, "b"), (3, "a")))
    (tmp_path / "boxes.json").write_text(json.dumps(doc))
    data = load_dataset(f"coco:{tmp_path / 'boxes.json'}", val_size=0)
    assert data.classes == ["background", "a", "b"] and not data.train.has_masks and not data.info["has_masks"]
    assert all("masks" not in t for t in data.train.targets + data.test.targets)
    assert "boxes only" in data.stats["notes"][0]


def test_bad_coco_input_is_named(tmp_path):
    save_rgb(tmp_path / "a.png", 20, 30, 0)
    good_ann = {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}

    def load(images=((1, "a.png", 20, 30),), anns=(good_ann,), doc=None, name="x.json"):
        (tmp_path / name).write_text(json.dumps(doc if doc is not None else coco_doc(list(images), list(anns))))
        return load_dataset(f"coco:{tmp_path / name}", val_size=0)

    with pytest.raises(ReslabError, match=r"x\.json: annotation 1 of image a\.png has a box \(25, 1, 35, 6\) outside "
                                          r"the 30x20 image"):
        load(anns=[{**good_ann, "bbox": [25, 1, 10, 5]}])
    with pytest.raises(ReslabError, match=r"x\.json: annotation 1 of image a\.png has a box of zero area \(0 x 5 px\)"):
        load(anns=[{**good_ann, "bbox": [1, 1, 0, 5]}])
    with pytest.raises(ReslabError, match=r"x\.json: annotation 1 refers to image id 9, which no entry of \"images\" "
                                          r"has"):
        load(anns=[{**good_ann, "image_id": 9}])
    with pytest.raises(ReslabError, match=r"annotation 1 \(image a\.png\) has category_id 5, which \"categories\" does "
                                          r"not list \(3, 7\)"):
        load(anns=[{**good_ann, "category_id": 5}])
    with pytest.raises(ReslabError, match=r"x\.json: the file of image id 2, 'gone\.png', is missing: neither "
                                          r".*gone\.png nor .*images/gone\.png exists"):
        load(images=[(1, "a.png", 20, 30), (2, "gone.png", 20, 30)])
    with pytest.raises(ReslabError, match=r"x\.json: image .*a\.png is 30x20 but its entry says 40x20"):
        load(images=[(1, "a.png", 20, 40)])
    with pytest.raises(ReslabError, match=r"x\.json is not COCO instances format: it is an object with keys "
                                          r"\['images'\], without the lists"):
        load(doc={"images": []})
    with pytest.raises(ReslabError, match=r"x\.json is not COCO instances format: it is a JSON list"):
        load(doc=[1, 2])
    with pytest.raises(ReslabError, match=r"x\.json: annotations\[0\] is not a COCO annotation"):
        load(anns=[{**good_ann, "bbox": [1, 1, 5]}])
    with pytest.raises(ReslabError, match=r"x\.json: annotation 1 of image a\.png: bad segmentation \(polygons must"):
        load(anns=[{**good_ann, "segmentation": [[1, 2, 3]]}])
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(ReslabError, match=r"y\.json is not valid JSON"):
        load_dataset(f"coco:{tmp_path / 'y.json'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReslabError, match=r"empty holds no train\.json; coco:PATH names a COCO instances JSON"):
        load_dataset(f"coco:{tmp_path / 'empty'}")


# --------------------------------------------------------------------------------------------
# DetLoader


@pytest.fixture(scope="module")
def train(pf):
    return load_dataset(f"pennfudan:{pf[0]}", task="detect", val_size=0).train  # 8 images


def test_flips_move_boxes_and_masks_exactly(train):
    loader = DetLoader(train, 4, seed=3)
    flipped = 0
    for images, targets in loader:
        for x, t in zip(images, targets):
            i = [int(u["image_id"]) for u in train.targets].index(int(t["image_id"]))
            x0, t0 = train.images[i], train.targets[i]
            assert x.dtype == torch.float32 and t["labels"].tolist() == t0["labels"].tolist()
            assert torch.allclose(x * 255, (x * 255).round(), atol=1e-4) and 0 <= float(x.min()) <= float(x.max()) <= 1
            x = (x * 255).round().to(torch.uint8)
            if torch.equal(x, x0):
                assert torch.equal(t["boxes"], t0["boxes"]) and torch.equal(t["masks"], t0["masks"])
                continue
            flipped += 1
            assert torch.equal(x, x0.flip(-1)) and torch.equal(t["masks"], t0["masks"].flip(-1))
            assert torch.equal(t["boxes"], boxes_from_masks(t["masks"]))  # exact: flipped pixel edges
    assert 0 < flipped < 8


def test_scale_jitter_moves_boxes_with_the_masks(train):
    loader = DetLoader(train, 2, seed=0, scale_range=(24, 96))
    sides = set()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for images, targets in loader:
            for x, t in zip(images, targets):
                i = [int(u["image_id"]) for u in train.targets].index(int(t["image_id"]))
                h0, w0 = train.sizes[i]
                side = min(x.shape[1:])
                sides.add(side)
                assert 24 <= side <= 96 and abs(x.shape[2] / x.shape[1] - w0 / h0) < 2 / side
                assert tuple(t["masks"].shape[1:]) == tuple(x.shape[1:]) and float(x.max()) <= 1
                assert float((t["boxes"] - boxes_from_masks(t["masks"])).abs().max()) <= 1
    assert min(sides) < 40 and max(sides) > 56  # both down and up from the 40-55 px images


def test_batches_are_a_function_of_seed_epoch_and_index(train):
    loader = DetLoader(train, 2, seed=7, scale_range=(30, 60))

    def epoch(e, first=0):
        loader.set_epoch(e)
        return [([x.clone() for x in xs], ts) for xs, ts in loader.iterate(first)]

    def same(a, b):
        return len(a) == len(b) and all(len(xa) == len(xb) and all(torch.equal(u, v) for u, v in zip(xa, xb))
                                        and all(ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
                                                for ta, tb in zip(ya, yb)) for (xa, ya), (xb, yb) in zip(a, b))

    full = epoch(1)
    assert len(full) == len(loader) == 4 and same(full, epoch(1)) and same(full[2:], epoch(1, 2))
    assert not same(full, epoch(2))
    ids = [int(t["image_id"]) for _, ts in full for t in ts]
    assert sorted(ids) == sorted(int(t["image_id"]) for t in train.targets)  # each image once an epoch
    ranks = [DetLoader(train, 4, seed=7, scale_range=(30, 60), rank=r, world_size=2) for r in (0, 1)]
    whole = DetLoader(train, 4, seed=7, scale_range=(30, 60))
    for r in (*ranks, whole):
        r.set_epoch(1)
    for (x0, t0), (x1, t1), (xw, tw) in zip(ranks[0], ranks[1], whole):
        assert len(x0) == len(x1) == 2 and all(torch.equal(a, b) for a, b in zip(x0 + x1, xw))
        assert [int(t["image_id"]) for t in t0 + t1] == [int(t["image_id"]) for t in tw]


def test_bad_loader_arguments(train):
    with pytest.raises(ReslabError, match=r"batch_size 9 is larger than the 8 training images"):
        DetLoader(train, 9)
    with pytest.raises(ReslabError, match=r"scale_range must be two whole numbers 1 <= lo <= hi"):
        DetLoader(train, 2, scale_range=(60, 30))
    with pytest.raises(ReslabError, match=r"batch_size 1 leaves some of the 2 processes no image"):
        DetLoader(train, 1, world_size=2)
    with pytest.raises(ReslabError, match=r"masks of image x must be uint8 \(1, 4, 5\), got none"):
        DetectionImages([torch.zeros(3, 4, 5, dtype=torch.uint8)], [{"boxes": torch.ones(1, 4), "labels":
                        torch.ones(1, dtype=torch.int64), "image_id": torch.tensor(0)}], ["x"], has_masks=True)
