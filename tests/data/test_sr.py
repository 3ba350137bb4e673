"""``sr:PATH``: folders and archives of photos (mask and label folders skipped), the fixed 20% test
split, the bicubic resize against PIL's, and the training patches (aligned LR/HR, seeded, exact
on resume, one-line errors for images smaller than a patch)."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from reslab.data import load_dataset
from reslab.data.sr import SRImages, SRLoader, downscale, is_label_path, modcrop, upscale
from reslab.errors import ReslabError


def _photo(seed: int, h: int, w: int) -> np.ndarray:
    """A smooth random colour image with a few edges (a stand-in for a photo)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(h // 8, 2), max(w // 8, 2), generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    img[:, h // 3:h // 2, :] += 0.3 * torch.rand(3, 1, 1, generator=g)
    return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def write_photos(root: Path, n: int = 10, size: tuple[int, int] = (40, 36), masks: bool = True) -> Path:
    """``n`` photos in ``root/PNGImages`` (some JPEG, one grayscale) and their masks in ``root/PedMasks``."""
    (root / "PNGImages").mkdir(parents=True)
    for i in range(n):
        arr = _photo(i, *size)
        img = Image.fromarray(arr).convert("L") if i == 3 else Image.fromarray(arr)
        img.save(root / "PNGImages" / f"img{i:02d}.{'jpg' if i % 4 == 1 else 'png'}")
        if masks:
            (root / "PedMasks").mkdir(exist_ok=True)
            Image.fromarray((arr[..., 0] > 128).astype(np.uint8), mode="L").save(root / "PedMasks" / f"img{i:02d}_mask.png")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return write_photos(tmp_path_factory.mktemp("photos"))


def test_a_folder_of_photos_skips_the_masks_and_splits_80_20(photos):
    data = load_dataset(f"sr:{photos}")
    assert data.classes == [] and data.channels == 3
    counts = {k: len(getattr(data, k)) for k in ("train", "val", "test")}
    assert counts == {"train": 7, "val": 1, "test": 2}  # 20% test, then 10% of the other 8 for validation
    names = data.train.names + data.val.names + data.test.names
    assert sorted(names) == sorted(f"PNGImages/{p.name}" for p in (photos / "PNGImages").iterdir())
    assert data.info["skipped_labels"] == 10 and "skipped 10 images in mask/label folders (not photos)" in data.stats["notes"]
    assert data.stats["grayscale"] == 1
    assert all(x.shape[0] == 3 and x.dtype == torch.uint8 for x in data.train.images)
    # the test draw is fixed; the validation draw moves with the seed
    other = load_dataset(f"sr:{photos}", seed=5)
    assert other.test.names == data.test.names
    assert sorted(other.train.names + other.val.names) == sorted(data.train.names + data.val.names)


def test_archives_read_like_the_folder(photos, tmp_path):
    folder = load_dataset(f"sr:{photos}")
    zpath, tpath = tmp_path / "photos.zip", tmp_path / "photos.tar.gz"
    with zipfile.ZipFile(zpath, "w") as z, tarfile.open(tpath, "w:gz") as t:
        for p in sorted(photos.rglob("*")):
            if p.is_file():
                z.write(p, f"PennFudanPed/{p.relative_to(photos)}")
                t.add(p, f"PennFudanPed/{p.relative_to(photos)}")
    for archive in (zpath, tpath):
        data = load_dataset(f"sr:{archive}")
        assert [n.split("/", 1)[1] for n in data.test.names] == folder.test.names
        assert all(torch.equal(a, b) for a, b in zip(data.test.images, folder.test.images))
        assert data.info["skipped_labels"] == 10 and data.info["source"] == "archive"


def test_label_folders_by_name():
    assert is_label_path("PennFudanPed/PedMasks/a_mask.png") and is_label_path("x/masks/a.png")
    assert is_label_path("Labels/a.png") and is_label_path("annotations/b.jpg")
    assert not is_label_path("PennFudanPed/PNGImages/a.png") and not is_label_path("mask.png")


def test_bad_paths_and_options_are_one_line(tmp_path):
    with pytest.raises(ReslabError, match="does not exist"):
        load_dataset(f"sr:{tmp_path / 'nope'}")
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ReslabError, match=r"holds no photos \(1 images in mask/label folders were skipped\)"):
        load_dataset(f"sr:{tmp_path}")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ReslabError, match="not a .zip/.tar/.tar.gz/.tgz archive"):
        load_dataset(f"sr:{tmp_path / 'notes.txt'}")
    with pytest.raises(ReslabError, match="image_size does not apply"):
        load_dataset(f"sr:{tmp_path}", image_size=32)


def test_bicubic_downscale_is_pils_kernel():
    """torch's antialiased bicubic is PIL's a=-0.5 kernel: computed as PIL computes it (a horizontal then a vertical
    pass, rounded to 8 bits after each) it equals PIL's resize to a grey level on a few pixels; ours rounds once, at
    the end (as MATLAB's imresize does), and so differs from PIL's by PIL's intermediate rounding: at most 2 levels."""
    for seed, (h, w), s in ((0, (96, 72), 2), (1, (93, 60), 3), (2, (64, 88), 4)):
        hr = modcrop(torch.from_numpy(_photo(seed, h, w)).permute(2, 0, 1), s).contiguous()
        h, w = hr.shape[1:]
        pil = Image.fromarray(hr.permute(1, 2, 0).numpy()).resize((w // s, h // s), Image.BICUBIC)
        pil_t = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
        two_pass = F.interpolate(hr[None].float(), size=(h, w // s), mode="bicubic", antialias=True).round().clamp(0, 255)
        two_pass = F.interpolate(two_pass, size=(h // s, w // s), mode="bicubic", antialias=True)[0].round().clamp(0, 255)
        like_pil = (two_pass.int() - pil_t).abs()
        assert int(like_pil.max()) <= 1 and float(like_pil.float().mean()) < 0.01
        ours = (downscale(hr, s).int() - pil_t).abs()
        assert int(ours.max()) <= 2 and float(ours.float().mean()) < 0.2


def test_bicubic_upscale_is_pils_kernel():
    lr = torch.from_numpy(_photo(4, 30, 22)).permute(2, 0, 1).contiguous()
    for s in (2, 3):
        pil = Image.fromarray(lr.permute(1, 2, 0).numpy()).resize((22 * s, 30 * s), Image.BICUBIC)
        pil_t = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
        two_pass = F.interpolate(lr[None].float(), size=(30, 22 * s), mode="bicubic", antialias=True).round().clamp(0, 255)
        two_pass = F.interpolate(two_pass, size=(30 * s, 22 * s), mode="bicubic", antialias=True)[0].round().clamp(0, 255)
        like_pil = (two_pass.int() - pil_t).abs()
        assert int(like_pil.max()) <= 1 and float(like_pil.float().mean()) < 0.05  # PIL: 22-bit fixed point
        ours = (upscale(lr[None].float(), s)[0].round().clamp(0, 255).int() - pil_t).abs()
        assert int(ours.max()) <= 2 and float(ours.float().mean()) < 0.2
        # the a = -0.75 kernel (torch without antialias, OpenCV) is another resize altogether
        other = F.interpolate(lr[None].float(), scale_factor=s, mode="bicubic", antialias=False)[0].round().clamp(0, 255)
        assert int((other.int() - pil_t).abs().max()) > 2


def test_modcrop_keeps_the_top_left_multiple():
    x = torch.zeros(3, 37, 50)
    assert modcrop(x, 4).shape == (3, 36, 48) and modcrop(x, 2).shape == (3, 36, 50)
    with pytest.raises(ReslabError, match="not a multiple of the scale 3"):
        downscale(torch.zeros(3, 10, 9, dtype=torch.uint8), 3)


def _split(n: int = 3, size=(40, 36)) -> SRImages:
    return SRImages([torch.from_numpy(_photo(i, *size)).permute(2, 0, 1).contiguous() for i in range(n)],
                    [f"p{i}.png" for i in range(n)], "/data")


def test_patches_are_aligned_lr_hr_pairs():
    data = _split()
    loader = SRLoader(data, 4, patch=16, scale=2, seed=3, flips=True)
    assert len(loader) == 3 * 16 // 4
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4, 3, 16, 16)
    assert x.dtype == y.dtype == torch.float32 and 0 <= float(x.min()) and float(y.max()) <= 1
    # each LR patch is a window of the whole image's LR image, the HR patch the matching window
    for i in range(4):
        lr_img = [downscale(modcrop(im, 2), 2) for im in data.images]
        found = False
        for k, lr in enumerate(lr_img):
            for flip in range(8):
                cand = (x[i] * 255).round().byte()
                if flip & 4:
                    cand = cand.transpose(-1, -2)
                if flip & 2:
                    cand = cand.flip(-2)
                if flip & 1:
                    cand = cand.flip(-1)
                windows = lr.unfold(1, 8, 1).unfold(2, 8, 1)  # (3, H-7, W-7, 8, 8)
                hit = (windows == cand[:, None, None]).all(0).all(-1).all(-1).nonzero()
                if len(hit):
                    t, left = hit[0].tolist()
                    hr = data.images[k][:, 2 * t:2 * t + 16, 2 * left:2 * left + 16].float() / 255
                    if flip & 4:
                        hr = hr.transpose(-1, -2)
                    if flip & 2:
                        hr = hr.flip(-2)
                    if flip & 1:
                        hr = hr.flip(-1)
                    found = found or torch.equal(hr, y[i])
        assert found


def test_batches_are_a_pure_function_of_seed_epoch_and_index():
    data = _split()

    def loader(**kw) -> SRLoader:
        return SRLoader(data, 2, patch=16, scale=2, seed=1, **kw)

    a, b = loader(), loader()
    a.set_epoch(2), b.set_epoch(2)
    all_a, resumed = list(a.iterate()), list(b.iterate(5))
    assert len(resumed) == len(all_a) - 5
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(all_a[5:], resumed))
    # two ranks cut the two halves of the same global batch
    ranks = [next(loader(rank=r, world_size=2).iterate()) for r in (0, 1)]
    whole = next(loader().iterate())
    assert [r[0].shape[0] for r in ranks] == [1, 1]
    assert torch.equal(torch.cat([ranks[0][1], ranks[1][1]]), whole[1])
    assert not torch.equal(whole[1], all_a[0][1])  # another epoch, other patches


def test_vdsr_batches_are_bicubic_upscales():
    data = _split()
    x, y = next(iter(SRLoader(data, 2, patch=18, scale=3, upscaled_input=True, seed=0, flips=False)))
    assert x.shape == y.shape == (2, 3, 18, 18)
    lr = next(iter(SRLoader(data, 2, patch=18, scale=3, seed=0, flips=False)))[0]
    assert torch.allclose(x, upscale(lr, 3), atol=1e-6)


def test_an_image_smaller_than_a_patch_is_named():
    data = SRImages([torch.zeros(3, 50, 50, dtype=torch.uint8), torch.zeros(3, 30, 41, dtype=torch.uint8)],
                    ["a.png", "small.png"], "/photos")
    with pytest.raises(ReslabError, match=r"training image /photos/small\.png is 41x30, smaller than the 48-pixel "
                                          r"training patch \(crop_size\); remove it, or train on smaller patches "
                                          r"\(--crop-size 30\)"):
        SRLoader(data, 2, patch=48, scale=2)
    with pytest.raises(ReslabError, match="crop_size 50 .* must be a multiple of the scale 3; use 48 or 51"):
        SRLoader(data, 2, patch=50, scale=3)
