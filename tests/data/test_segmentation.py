"""Segmentation datasets on real files: tiles of the real ISBI 2012 slices (as PNGs and as the
challenge's multi-page TIFFs), real Penn-Fudan photos repacked in tmp (zip, tar.gz, folder, and a
download from a local HTTP server), and folders of images with masks made of real images; every
bad input is one line naming the file."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import MaskImages, load_dataset, read_mask
from reslab.data import download as dl
from reslab.data import segmentation as seg
from reslab.errors import ReslabError

from .conftest import isolated_cache

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
ISBI = SHARED / "isbi2012"
PENNFUDAN = SHARED / "pennfudan.tar.gz"
needs_isbi = pytest.mark.skipif(not (ISBI / "train" / "label").is_dir(), reason=f"{ISBI} (the ISBI 2012 slices) is absent")
needs_pennfudan = pytest.mark.skipif(not PENNFUDAN.is_file(), reason=f"{PENNFUDAN} (the Penn-Fudan archive) is absent")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    return isolated_cache(tmp_path, monkeypatch)


# --------------------------------------------------------------------------------------------
# ISBI 2012


@pytest.fixture(scope="module")
def isbi_tiles():
    """(images, labels): 30 real 48x40 tiles of the ISBI slices, uint8 arrays (label 0/255)."""
    if not (ISBI / "train" / "label").is_dir():
        pytest.skip(f"{ISBI} (the ISBI 2012 slices) is absent")
    images, labels = [], []
    for i in range(30):
        images.append(np.asarray(Image.open(ISBI / "train" / "image" / f"{i}.png"))[200:248, 100:140].copy())
        labels.append(np.asarray(Image.open(ISBI / "train" / "label" / f"{i}.png"))[200:248, 100:140].copy())
    return images, labels


def write_isbi(root: Path, images, labels, sub=("train", "image"), lab=("train", "label")) -> Path:
    (root.joinpath(*sub)).mkdir(parents=True)
    (root.joinpath(*lab)).mkdir(parents=True)
    for i, (x, y) in enumerate(zip(images, labels)):
        Image.fromarray(x).save(root.joinpath(*sub) / f"{i}.png")
        Image.fromarray(y).save(root.joinpath(*lab) / f"{i}.png")
    return root


def test_isbi_slices_with_the_last_five_held_out(tmp_path, isbi_tiles):
    images, labels = isbi_tiles
    root = write_isbi(tmp_path / "isbi", images, labels)
    data = load_dataset(f"isbi2012:{root}")
    assert data.name == f"isbi2012:{root}" and data.classes == ["membrane", "cell"] and data.channels == 1
    assert data.image_size == (48, 40) and data.info["counts"] == {"train": 22, "val": 3, "test": 5}
    assert isinstance(data.train, MaskImages) and data.test.names == ["25", "26", "27", "28", "29"]
    assert sorted(data.train.names + data.val.names, key=int) == [str(i) for i in range(25)]
    for split in (data.train, data.val, data.test):
        for name, x, m in zip(split.names, split.images, split.masks):
            i = int(name)
            assert torch.equal(x, torch.from_numpy(images[i])[None]) and x.dtype == torch.uint8
            assert torch.equal(m, torch.from_numpy((labels[i] == 255).astype(np.uint8)))
    vals = {tuple(load_dataset(f"isbi2012:{root}", seed=s).val.names) for s in range(4)}
    assert len(vals) > 1 and all(int(n) < 25 for v in vals for n in v)  # seeded draws, never the test slices
    assert load_dataset(f"isbi2012:{root}", seed=0).val.names == data.val.names
    assert len(load_dataset(f"isbi2012:{root}", val_size=0).val) == 0
    assert len(load_dataset(f"isbi2012:{root}", val_size=0.2).val) == 5
    pixels = data.stats["train_pixels_per_class"]
    assert pixels == [sum(int((labels[int(n)] == v).sum()) for n in data.train.names) for v in (0, 255)]
    assert data.stats["train_per_class"][1] == 22 and data.stats["imbalance"] == round(max(pixels) / min(pixels), 3)


def test_isbi_challenge_tiffs_give_the_same_slices(tmp_path, isbi_tiles):
    images, labels = isbi_tiles
    pngs = load_dataset(f"isbi2012:{write_isbi(tmp_path / 'png', images, labels)}")
    root = tmp_path / "tif"
    root.mkdir()
    first, *rest = [Image.fromarray(x) for x in images]
    first.save(root / "train-volume.tif", save_all=True, append_images=rest)
    first, *rest = [Image.fromarray(y) for y in labels]
    first.save(root / "train-labels.tif", save_all=True, append_images=rest, compression="tiff_deflate")
    tiffs = load_dataset(f"isbi2012:{root}")
    assert tiffs.info["source"] == "tiff" and tiffs.info["counts"] == pngs.info["counts"]
    for a, b in ((tiffs.train, pngs.train), (tiffs.val, pngs.val), (tiffs.test, pngs.test)):
        assert a.names == b.names
        assert all(torch.equal(x, y) for x, y in zip(a.images, b.images))
        assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks))
    (root / "train-labels.tif").unlink()
    with pytest.raises(ReslabError, match=r"train-volume\.tif has no partner .*train-labels\.tif"):
        load_dataset(f"isbi2012:{root}")


@needs_isbi
def test_the_real_isbi_training_set():
    data = load_dataset(f"isbi2012:{ISBI}")
    assert data.info["counts"] == {"train": 22, "val": 3, "test": 5} and data.image_size == (512, 512)
    label = np.asarray(Image.open(ISBI / "train" / "label" / "27.png"))
    assert torch.equal(data.test.masks[2], torch.from_numpy((label == 255).astype(np.uint8)))
    membrane, cell = data.stats["train_pixels_per_class"]
    assert 0.15 < membrane / (membrane + cell) < 0.3  # about a fifth of the pixels are membrane


def test_bad_isbi_folders_are_named(tmp_path, isbi_tiles):
    images, labels = isbi_tiles
    root = write_isbi(tmp_path / "a", images, labels)
    bad = labels[3].copy()
    bad[0, 0] = 128
    Image.fromarray(bad).save(root / "train" / "label" / "3.png")
    with pytest.raises(ReslabError, match=r"label .*/train/label/3\.png has value 128; ISBI 2012 labels are 0 "
                                          r"\(membrane\) and 255 \(cell\)"):
        load_dataset(f"isbi2012:{root}")
    root = write_isbi(tmp_path / "b", images, labels)
    (root / "train" / "label" / "7.png").unlink()
    with pytest.raises(ReslabError, match=r"image .*/train/image/7\.png has no mask \(expected .*/train/label/7\.png\)"):
        load_dataset(f"isbi2012:{root}")
    root = write_isbi(tmp_path / "c", images, labels)
    Image.fromarray(labels[4][:40]).save(root / "train" / "label" / "4.png")
    with pytest.raises(ReslabError, match=r"image .*/image/4\.png is 40x48 but its mask .*/label/4\.png is 40x40"):
        load_dataset(f"isbi2012:{root}")
    root = write_isbi(tmp_path / "d", images[:5], labels[:5])
    with pytest.raises(ReslabError, match="has 5 slices; the last 5 are the test set"):
        load_dataset(f"isbi2012:{root}")
    root = write_isbi(tmp_path / "e", images[:8], labels[:8])
    (root / "train" / "image" / "0.png").rename(root / "train" / "image" / "first.png")
    with pytest.raises(ReslabError, match=r"image .*first\.png is not named by its slice number"):
        load_dataset(f"isbi2012:{root}")
    (tmp_path / "f").mkdir()
    with pytest.raises(ReslabError, match=r"holds no ISBI 2012 training set; expected .*/train/image/N\.png"):
        load_dataset(f"isbi2012:{tmp_path / 'f'}")
    with pytest.raises(ReslabError, match=r"does not exist; check the path after 'isbi2012:'"):
        load_dataset(f"isbi2012:{tmp_path / 'nowhere'}")
    root = write_isbi(tmp_path / "g", images[:8], labels[:8])
    (root / "train" / "image" / "2.png").write_bytes(b"not a png")
    with pytest.raises(ReslabError, match=r"cannot decode image .*/image/2\.png"):
        load_dataset(f"isbi2012:{root}")


# --------------------------------------------------------------------------------------------
# Penn-Fudan


PF_STEMS = [f"FudanPed000{i:02d}" for i in range(1, 11)] + [f"PennPed000{i:02d}" for i in range(1, 11)]


@pytest.fixture(scope="module")
def pf_members():
    """{member name: bytes} of 20 real image/mask pairs of the Penn-Fudan archive (kept in tmp only:
    its licence forbids reposting)."""
    if not PENNFUDAN.is_file():
        pytest.skip(f"{PENNFUDAN} (the Penn-Fudan archive) is absent")
    wanted = {f"PennFudanPed/PNGImages/{s}.png" for s in PF_STEMS} | {f"PennFudanPed/PedMasks/{s}_mask.png"
                                                                    for s in PF_STEMS}
    found = {}
    with tarfile.open(PENNFUDAN, "r|gz") as tf:
        for member in tf:
            if member.name in wanted:
                found[member.name] = tf.extractfile(member).read()
    assert len(found) == 40
    return found


def pick(members, stems, drop=()):
    return {k: v for k, v in members.items() if any(f"/{s}." in k or f"/{s}_mask." in k for s in stems)
            and not any(k.endswith(d) for d in drop)}


def make_zip(path: Path, members) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(members.items()):
            zf.writestr(name, data)
    return path


def make_tgz(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_pennfudan_person_masks_from_the_zip(tmp_path, pf_members):
    data = load_dataset(f"pennfudan:{make_zip(tmp_path / 'PennFudanPed.zip', pf_members)}")
    assert data.classes == ["background", "person"] and data.channels == 3 and data.image_size is None
    assert data.info["counts"] == {"train": 14, "val": 2, "test": 4} and data.info["source"] == "archive"
    names = data.train.names + data.val.names + data.test.names
    assert sorted(names) == sorted(PF_STEMS)
    for split in (data.train, data.val, data.test):
        for name, x, m in zip(split.names, split.images, split.masks):
            rgb = np.asarray(Image.open(io.BytesIO(pf_members[f"PennFudanPed/PNGImages/{name}.png"])).convert("RGB"))
            ids = np.asarray(Image.open(io.BytesIO(pf_members[f"PennFudanPed/PedMasks/{name}_mask.png"])))
            assert torch.equal(x, torch.from_numpy(rgb.copy()).permute(2, 0, 1))
            assert torch.equal(m, torch.from_numpy((ids > 0).astype(np.uint8)))
            assert ids.max() >= 1 and set(np.unique(ids)) == set(range(ids.max() + 1))  # instances 1..k
    others = [load_dataset(f"pennfudan:{tmp_path / 'PennFudanPed.zip'}", seed=s) for s in (1, 2)]
    assert all(o.test.names == data.test.names for o in others)  # the test set does not move with the seed
    assert len({tuple(o.val.names) for o in [data, *others]}) > 1  # validation does


def test_pennfudan_tgz_and_folder_read_the_same(tmp_path, pf_members):
    few = pick(pf_members, PF_STEMS[:6])
    ref = load_dataset(f"pennfudan:{make_zip(tmp_path / 'a.zip', few)}", val_size=0)
    tgz = load_dataset(f"pennfudan:{make_tgz(tmp_path / 'b.tar.gz', few)}", val_size=0)
    for name, data in few.items():
        (tmp_path / "x" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "x" / name).write_bytes(data)
    folder = load_dataset(f"pennfudan:{tmp_path / 'x'}", val_size=0)
    inner = load_dataset(f"pennfudan:{tmp_path / 'x' / 'PennFudanPed'}", val_size=0)
    assert folder.info["source"] == "folder" and folder.name == f"pennfudan:{tmp_path / 'x' / 'PennFudanPed'}"
    for other in (tgz, folder, inner):
        for a, b in ((ref.train, other.train), (ref.test, other.test)):
            assert a.names == b.names and all(torch.equal(x, y) for x, y in zip(a.images + a.masks, b.images + b.masks))


def test_pennfudan_image_size_resizes_image_and_mask_alike(tmp_path, pf_members):
    few = pick(pf_members, PF_STEMS[:5])
    data = load_dataset(f"pennfudan:{make_zip(tmp_path / 'a.zip', few)}", val_size=0, image_size=64)
    for name, x, m in zip(data.train.names, data.train.images, data.train.masks):
        assert min(x.shape[1:]) == 64 and tuple(x.shape[1:]) == tuple(m.shape)
        img = Image.open(io.BytesIO(few[f"PennFudanPed/PNGImages/{name}.png"])).convert("RGB")
        ids = Image.open(io.BytesIO(few[f"PennFudanPed/PedMasks/{name}_mask.png"]))
        size = (x.shape[2], x.shape[1])
        ref_mask = np.asarray(ids.resize(size, Image.NEAREST)) > 0  # PIL's nearest: pixel centres
        assert np.array_equal(m.numpy(), ref_mask.astype(np.uint8))
        ref = np.asarray(img.resize(size, Image.BILINEAR)).transpose(2, 0, 1).astype(int)
        assert np.abs(x.numpy().astype(int) - ref).max() <= 1  # torchvision's antialiased bilinear is PIL's, +-1


@needs_pennfudan
def test_the_real_pennfudan_archive():
    data = load_dataset(f"pennfudan:{PENNFUDAN}")
    assert data.info["counts"] == {"train": 122, "val": 14, "test": 34}
    assert len({*data.train.names, *data.val.names, *data.test.names}) == 170
    background, person = data.stats["train_pixels_per_class"]
    assert 0.1 < person / (background + person) < 0.3


def test_bad_pennfudan_inputs_are_named(tmp_path, pf_members):
    few = pick(pf_members, PF_STEMS[:4], drop=("FudanPed00002_mask.png",))
    with pytest.raises(ReslabError, match=r"image .*PNGImages/FudanPed00002\.png has no mask \(expected "
                                          r".*PedMasks/FudanPed00002_mask\.png\)"):
        load_dataset(f"pennfudan:{make_zip(tmp_path / 'a.zip', few)}")
    few = pick(pf_members, PF_STEMS[:4], drop=("PNGImages/FudanPed00003.png",))
    with pytest.raises(ReslabError, match=r"mask .*PedMasks/FudanPed00003_mask\.png has no image"):
        load_dataset(f"pennfudan:{make_zip(tmp_path / 'b.zip', few)}")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ReslabError, match=r"c\.txt is not a \.zip/\.tar\.gz/\.tgz archive; pennfudan:PATH names"):
        load_dataset(f"pennfudan:{tmp_path / 'c.txt'}")
    (tmp_path / "d").mkdir()
    with pytest.raises(ReslabError, match=r"holds no Penn-Fudan tree; expected .*/d/PennFudanPed/PNGImages/"):
        load_dataset(f"pennfudan:{tmp_path / 'd'}")
    cut = make_zip(tmp_path / "e.zip", pick(pf_members, PF_STEMS[:3]))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with pytest.raises(ReslabError, match=r"e\.zip is truncated or corrupt"):
        load_dataset(f"pennfudan:{cut}")


def serve(monkeypatch, www, base, members, md5=None):
    archive = make_zip(www / "PennFudanPed.zip", members)
    monkeypatch.setitem(dl.RESOURCES, "pennfudan", (dl.Resource("PennFudanPed.zip", md5, (base + "PennFudanPed.zip",)),))
    monkeypatch.setattr(seg, "PENNFUDAN_IMAGES", 6)  # the served archive's count, where the authors' has 170
    return archive


def test_pennfudan_downloads_verifies_and_then_loads_from_the_cache(server, monkeypatch, cache, pf_members):
    www, base = server
    archive = serve(monkeypatch, www, base, pick(pf_members, PF_STEMS[:6]))
    data = load_dataset("pennfudan", val_size=0)
    assert data.name == "pennfudan" and data.info["source"] == "download"
    assert (cache / "pennfudan" / "PennFudanPed.zip").read_bytes() == archive.read_bytes()
    assert sorted(data.train.names + data.test.names) == PF_STEMS[:6]
    monkeypatch.setitem(dl.RESOURCES, "pennfudan", (dl.Resource("PennFudanPed.zip", None, (base + "gone.zip",)),))
    again = load_dataset("pennfudan", val_size=0)
    assert again.info["source"] == "cache" and again.test.names == data.test.names


def test_pennfudan_download_with_the_wrong_structure_is_removed(server, monkeypatch, cache, pf_members):
    www, base = server
    serve(monkeypatch, www, base, pick(pf_members, PF_STEMS[:6], drop=("FudanPed00004_mask.png",)))
    with pytest.raises(dl.ChecksumError, match=r"PennFudanPed\.zip is not the Penn-Fudan archive: it lists 6 images "
                                               r"and 5 masks, not 6 of each; it was removed"):
        load_dataset("pennfudan")
    assert not (cache / "pennfudan" / "PennFudanPed.zip").exists()


def test_pennfudan_download_checks_an_md5_where_one_is_set(server, monkeypatch, cache, pf_members):
    www, base = server
    archive = serve(monkeypatch, www, base, pick(pf_members, PF_STEMS[:6]), md5="0" * 32)
    with pytest.raises(dl.ChecksumError, match=r"checksum mismatch for PennFudanPed\.zip"):
        load_dataset("pennfudan")
    assert not (cache / "pennfudan" / "PennFudanPed.zip").exists()
    good = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(dl.RESOURCES, "pennfudan", (dl.Resource("PennFudanPed.zip", good, (base + "PennFudanPed.zip",)),))
    assert load_dataset("pennfudan", val_size=0).info["source"] == "download"


def test_pennfudan_found_in_the_data_directories(tmp_path, monkeypatch, pf_members):
    few = pick(pf_members, PF_STEMS[:6])
    (tmp_path / "data").mkdir()
    make_zip(tmp_path / "data" / "PennFudanPed.zip", few)
    data = load_dataset("pennfudan", data_dir=tmp_path / "data", download=False, val_size=0)
    assert data.info["source"] == "data_dir" and data.info["root"] == str(tmp_path / "data" / "PennFudanPed.zip")
    for name, blob in few.items():
        (tmp_path / "env" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "env" / name).write_bytes(blob)
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "env"))
    data = load_dataset("pennfudan", download=False, val_size=0)
    assert data.info["source"] == "data_dir" and data.info["root"] == str(tmp_path / "env" / "PennFudanPed")


def test_pennfudan_offline_says_which_file_goes_where(cache):
    with pytest.raises(ReslabError, match=r"pennfudan not found: looked for PennFudanPed\.zip \(or the extracted "
                                          rf"PennFudanPed/ folder\) in {cache / 'pennfudan'}; put the files"):
        load_dataset("pennfudan", download=False)


# --------------------------------------------------------------------------------------------
# segfolder: your own images and masks


@pytest.fixture(scope="module")
def real(embedded):
    """Twelve real 28x28 grayscale images (Fashion-MNIST) and masks made from them: 0 background,
    1 over 80, 2 over 180."""
    images = [embedded.train.images[i, 0].numpy() for i in range(12)]
    masks = [(x > 80).astype(np.uint8) + (x > 180).astype(np.uint8) for x in images]
    return images, masks


def write_seg(root: Path, images, masks, names=None, mask_ext=".png") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, (x, m) in enumerate(zip(images, masks)):
        name = names[i] if names else f"im{i:02d}"
        Image.fromarray(x).save(root / "images" / f"{name}.png")
        Image.fromarray(m).save(root / "masks" / f"{name}{mask_ext}")
    return root


def test_segfolder_reads_class_indices(tmp_path, real):
    images, masks = real
    root = write_seg(tmp_path / "mine", images, masks)
    data = load_dataset(f"segfolder:{root}")
    assert data.name == f"segfolder:{root}" and data.classes == ["class_0", "class_1", "class_2"]
    assert data.channels == 1 and data.image_size == (28, 28) and data.test is None
    assert data.info["counts"] == {"train": 11, "val": 1, "test": 0} and data.info["val_from"] == "train"
    for split in (data.train, data.val):
        for name, x, m in zip(split.names, split.images, split.masks):
            i = int(name[2:])
            assert torch.equal(x[0], torch.from_numpy(images[i])) and torch.equal(m, torch.from_numpy(masks[i]))
    (root / "classes.txt").write_text("background\nshirt\nbright\n")
    named = load_dataset(f"segfolder:{root}", val_size=3, seed=2)
    assert named.classes == ["background", "shirt", "bright"] and len(named.val) == 3


def test_segfolder_val_and_test_folders(tmp_path, real):
    images, masks = real
    root = tmp_path / "splits"
    write_seg(root / "train", images[:8], masks[:8])
    write_seg(root / "val", images[8:10], masks[8:10], names=["v0", "v1"])
    write_seg(root / "test", images[10:], masks[10:], names=["t0", "t1"])
    data = load_dataset(f"segfolder:{root}")
    assert data.info["counts"] == {"train": 8, "val": 2, "test": 2} and data.info["val_from"] == "val folder"
    assert data.val.names == ["v0", "v1"] and data.test.names == ["t0", "t1"]
    assert torch.equal(data.test.masks[1], torch.from_numpy(masks[11]))


def test_binary_and_palette_masks(tmp_path, real):
    images, masks = real
    binary = [np.where(m > 0, 255, 0).astype(np.uint8) for m in masks]
    data = load_dataset(f"segfolder:{write_seg(tmp_path / 'bin', images, binary)}", val_size=0)
    assert data.classes == ["class_0", "class_1"] and data.info["binary_masks"]
    assert all(torch.equal(m, torch.from_numpy((masks[int(n[2:])] > 0).astype(np.uint8)))
               for n, m in zip(data.train.names, data.train.masks))
    root = write_seg(tmp_path / "pal", images, masks)
    for i, m in enumerate(masks):  # palette PNGs whose colours are not their indices
        p = Image.fromarray(m, mode="P")
        p.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30] + [0] * 759)
        p.save(root / "masks" / f"im{i:02d}.png")
    assert Image.open(root / "masks" / "im03.png").mode == "P"
    assert torch.equal(read_mask(root / "masks" / "im03.png"), torch.from_numpy(masks[3]))
    assert load_dataset(f"segfolder:{root}", val_size=0).classes == ["class_0", "class_1", "class_2"]
    colour = Image.fromarray(np.stack([masks[0] * 100, masks[0], masks[0]], -1))
    colour.save(root / "masks" / "im00.png")
    with pytest.raises(ReslabError, match=r"mask .*im00\.png is a colour \(RGB\) image; a mask holds one class index"):
        load_dataset(f"segfolder:{root}")


def test_segfolder_grayscale_among_colour_and_resizing(tmp_path, real):
    images, masks = real
    root = write_seg(tmp_path / "mixed", images[:6], masks[:6])
    Image.fromarray(np.stack([images[0], images[1], images[2]], -1)).save(root / "images" / "im00.png")
    data = load_dataset(f"segfolder:{root}", val_size=0, image_size=14)
    assert data.channels == 3 and data.stats["grayscale"] == 5 and "grayscale" in data.stats["notes"][0]
    i = data.train.names.index("im03")
    assert data.train.images[i].shape == (3, 14, 14) and torch.equal(data.train.images[i][0], data.train.images[i][2])
    ref = np.array(Image.fromarray(masks[3]).resize((14, 14), Image.NEAREST))
    assert torch.equal(data.train.masks[i], torch.from_numpy(ref))


def test_bad_segfolders_are_named(tmp_path, real):
    images, masks = real
    root = write_seg(tmp_path / "a", images[:4], masks[:4])
    Image.fromarray(masks[2][:20]).save(root / "masks" / "im02.png")
    with pytest.raises(ReslabError, match=r"image .*images/im02\.png is 28x28 but its mask .*masks/im02\.png is 28x20; "
                                          "an image and its mask must be the same size"):
        load_dataset(f"segfolder:{root}")
    root = write_seg(tmp_path / "b", images[:4], masks[:4])
    (root / "classes.txt").write_text("background\nshirt\n")
    with pytest.raises(ReslabError, match=r"mask .*masks/im0\d\.png has value 2, outside the class range 0-1 \(2 "
                                          r"classes in .*classes\.txt\)"):
        load_dataset(f"segfolder:{root}")
    root = write_seg(tmp_path / "c", images[:4], masks[:4])
    (root / "masks" / "im01.png").unlink()
    with pytest.raises(ReslabError, match=r"image .*images/im01\.png has no mask \(expected .*masks/im01\.png\)"):
        load_dataset(f"segfolder:{root}")
    root = write_seg(tmp_path / "d", images[:4], masks[:4])
    (root / "images" / "im03.png").unlink()
    with pytest.raises(ReslabError, match=r"mask .*masks/im03\.png has no image in .*/d/images"):
        load_dataset(f"segfolder:{root}")
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    with pytest.raises(ReslabError, match=r"/e/images and .*/e/masks hold no images"):
        load_dataset(f"segfolder:{tmp_path / 'e'}")
    (tmp_path / "f").mkdir()
    with pytest.raises(ReslabError, match=r"holds no images/ and masks/ folders; segfolder expects"):
        load_dataset(f"segfolder:{tmp_path / 'f'}")
    root = write_seg(tmp_path / "g", images[:4], masks[:4])
    (root / "images" / "im01.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ReslabError, match=r"cannot decode image .*images/im01\.png .*skip_bad=True"):
        load_dataset(f"segfolder:{root}")
    kept = load_dataset(f"segfolder:{root}", skip_bad=True, val_size=0)
    assert kept.train.names == ["im00", "im02", "im03"] and kept.info["skipped"] == [str(root / "images" / "im01.png")]
    root = write_seg(tmp_path / "h", images[:4], masks[:4], mask_ext=".jpg")
    with pytest.raises(ReslabError, match=r"mask .*im00\.jpg is a JPEG: lossy compression changes class indices"):
        load_dataset(f"segfolder:{root}")
    root = write_seg(tmp_path / "i", images[:4], [np.zeros_like(m) for m in masks[:4]])
    with pytest.raises(ReslabError, match="every mask under .* holds only class 0"):
        load_dataset(f"segfolder:{root}")
    root = write_seg(tmp_path / "j", images[:4], masks[:4])
    (root / "masks").rename(root / "labels")
    with pytest.raises(ReslabError, match=r"/j/images has no partner folder .*/j/masks"):
        load_dataset(f"segfolder:{root}")
    with pytest.raises(ReslabError, match=r"does not exist; check the path after 'segfolder:'"):
        load_dataset(f"segfolder:{tmp_path / 'nowhere'}")
    root = write_seg(tmp_path / "k", images[:4], masks[:4])
    (root / "classes.txt").write_text("background\nbackground\n")
    with pytest.raises(ReslabError, match=r"classes\.txt names class 'background' twice"):
        load_dataset(f"segfolder:{root}")
