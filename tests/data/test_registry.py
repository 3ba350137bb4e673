"""The dataset registry: every name loads or says which file goes where, unknown names get a
close match, image-folder names are recorded absolute, and a new dataset is one registration."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import (
    DatasetSplits,
    TensorImages,
    canonical_data_name,
    dataset_names,
    get_dataset_entry,
    list_datasets,
    load_dataset,
    register_dataset,
    registry,
)
from reslab.data.transforms import ResizeCenterCrop, pil_resize_center_crop, pil_to_uint8, resize_center_crop
from reslab.errors import ReslabError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_LOOKUP", dict(registry._LOOKUP))


def tiny_folder(root: Path) -> Path:
    for k, cls in enumerate(("ant", "bee")):
        (root / cls).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((4, 5, 3), 40 * k + j, np.uint8)).save(root / cls / f"{j}.png")
    return root


def test_the_registered_names_in_order_each_with_one_line():
    assert dataset_names() == ["cifar10", "cifar100", "mnist", "fashion_mnist", "embedded", "imagefolder:PATH",
                               "csv:PATH", "isbi2012:PATH", "pennfudan", "segfolder:PATH", "sr:PATH", "coco:PATH"]
    assert [get_dataset_entry(n).task for n in dataset_names()] == ["classify"] * 7 + ["segment"] * 3 + ["restore",
                                                                                                       "detect"]
    assert [n for n in dataset_names() if len(get_dataset_entry(n).tasks) > 1] == ["pennfudan"]
    assert get_dataset_entry("pennfudan").tasks == ("segment", "detect")
    assert list_datasets() == dataset_names()
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    assert list_datasets("imagefolder") == ["imagefolder:PATH"]
    for name in dataset_names():
        entry = get_dataset_entry(name)
        assert entry.usage == name and entry.description.strip() and "\n" not in entry.description
    for alias, name in (("CIFAR-10", "cifar10"), ("cifar-100", "cifar100"), ("Fashion-MNIST", "fashion_mnist"),
                        ("fashionmnist", "fashion_mnist"), ("imagefolder:/x", "imagefolder")):
        assert get_dataset_entry(alias).name == name


def test_every_name_loads_or_says_which_file_goes_where(tmp_path):
    folder = tiny_folder(tmp_path / "pets")
    listed = tmp_path / "pets.csv"  # the same images, for csv:
    listed.write_text("".join(f"pets/{p.relative_to(folder).as_posix()},{p.parent.name}\n"
                              for p in sorted(folder.rglob("*.png"))))
    for name in dataset_names():
        entry = get_dataset_entry(name)
        if entry.task == "segment" and entry.takes_path:
            continue  # folders of images with masks: tests/data/test_segmentation.py
        if entry.task == "restore":
            continue  # photos without labels: tests/data/test_sr.py
        if entry.task == "detect":
            continue  # COCO-format JSON: tests/data/test_detection.py
        query = f"{entry.name}:{listed if entry.name == 'csv' else folder}" if entry.takes_path else name
        try:
            data = load_dataset(query, download=False, val_size=0)
        except ReslabError as e:  # nothing of it here: the offline error names the files and where they go
            assert not entry.takes_path
            assert str(e).startswith(f"{name} not found: looked for ")
            assert str(tmp_path / "cache" / name) in str(e)
            assert str(e).endswith("put the files in one of those directories (--data-dir / $RESLAB_DATA) or "
                                   "allow downloading (download=True)")
            continue
        assert isinstance(data, DatasetSplits) and data.name.split(":")[0] == entry.name
        assert len(data.train) > 0 and len(data.val) == 0 and data.num_classes >= 2


def test_unknown_names_suggest_a_close_match():
    for wrong, close in (("cifar1", "cifar10"), ("fashion_mnst", "fashion_mnist"), ("embeded", "embedded"),
                         ("imagefolder", "imagefolder:")):
        with pytest.raises(ReslabError, match=rf"unknown dataset '{wrong}' \(did you mean '{close}'\?\); choose one "
                                              r"of cifar10, cifar100, mnist, fashion_mnist, embedded, imagefolder:PATH"):
            load_dataset(wrong)
        with pytest.raises(ReslabError, match=f"did you mean '{close}'"):
            get_dataset_entry(wrong)
    with pytest.raises(ReslabError, match=r"unknown dataset 'zzz'; choose one of cifar10"):
        load_dataset("zzz")
    with pytest.raises(ReslabError, match="dataset name must be a non-empty string"):
        load_dataset("  ")


def test_canonical_data_name_of_an_image_folder_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert canonical_data_name("imagefolder:pets") == f"imagefolder:{tmp_path / 'pets'}"
    assert canonical_data_name("ImageFolder:./a/../pets") == f"imagefolder:{tmp_path / 'a/../pets'}"
    assert canonical_data_name("imagefolder:~/pets") == f"imagefolder:{Path.home() / 'pets'}"
    assert canonical_data_name(f"imagefolder:{tmp_path}/x.tar.gz") == f"imagefolder:{tmp_path}/x.tar.gz"
    for unchanged in ("cifar10", "Fashion-MNIST", "imagefolder:", "cifar10:x", "nonsense"):
        assert canonical_data_name(unchanged) == unchanged
    # the recorded name loads the same folder from anywhere
    tiny_folder(tmp_path / "pets")
    name = canonical_data_name("imagefolder:pets")
    monkeypatch.chdir("/")
    assert load_dataset(name, val_size=0).name == name


def test_a_new_dataset_is_one_registration(scratch_registry):
    calls = []

    @register_dataset("toy", aliases=("toy-set",), default_val_size=2, description="four 2x2 images")
    def load_toy(path, options):
        calls.append((path, options))
        full = TensorImages(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1] * 4))
        train, val = full.subset(range(6)), full.subset(range(6, 8))
        return DatasetSplits("toy", ["a", "b"], 1, (2, 2), train, val, None)

    assert list_datasets("toy*") == ["toy"] and dataset_names()[-1] == "toy"
    assert load_dataset("Toy-Set", seed=3).name == "toy"
    assert calls[0][0] == "" and calls[0][1].val_size == 2 and calls[0][1].seed == 3  # the entry's default
    load_dataset("toy", val_size=0.5)
    assert calls[1][1].val_size == 0.5
    with pytest.raises(ReslabError, match="stream=True applies to imagefolder and csv datasets; toy is always held in memory"):
        load_dataset("toy", stream=True)
    with pytest.raises(ReslabError, match=r"did you mean 'toy'"):
        load_dataset("tooy")
    with pytest.raises(ValueError, match="'toy-set' is already registered"):
        register_dataset("other", aliases=("TOY-SET",), description="x")(load_toy)
    with pytest.raises(ValueError, match="one-line description"):
        register_dataset("other", description="two\nlines")(load_toy)


def test_one_resize_and_centre_crop():
    """The PIL helper is what ResizeCenterCrop and a streamed FileImages use; the tensor one what
    decoding and in-memory datasets use. Both: shorter side to the size, the centre square."""
    rng = np.random.default_rng(0)
    for h, w in ((5, 9), (30, 31), (6, 6), (100, 3), (224, 300)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for resize, crop in ((6, 6), (4, 4), (11, 11), (8, None), (12, 10)):
            r = resize / min(w, h)
            nw, nh = max(1, round(w * r)), max(1, round(h * r))
            ref = img.resize((nw, nh), Image.BILINEAR)
            if crop is not None:
                c = min(crop, nw, nh)
                ref = ref.crop(((nw - c) // 2, (nh - c) // 2, (nw - c) // 2 + c, (nh - c) // 2 + c))
            out = pil_resize_center_crop(img, resize, crop)
            assert out.size == ref.size and out.tobytes() == ref.tobytes()
            assert torch.equal(ResizeCenterCrop(resize, crop)(img), pil_to_uint8(ref))
        x = pil_to_uint8(img)
        for size in (4, min(h, w), 40):
            y = resize_center_crop(x, size)
            assert y.shape == (3, size, size) and y.dtype == torch.uint8
        square = x[:, :min(h, w), :min(h, w)]
        assert torch.equal(resize_center_crop(square, min(h, w)), square)  # already the size: untouched
