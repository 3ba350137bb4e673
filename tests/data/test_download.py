"""Downloads against a real HTTP server on 127.0.0.1 serving archives in the official CIFAR format."""

import hashlib
import io
import os
import pickle
import socket
import tarfile

import numpy as np
import pytest
import torch

from reslab.data import download as dl
from reslab.data import load_dataset, write_idx
from reslab.errors import ReslabError

from .conftest import isolated_cache

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    return isolated_cache(tmp_path, monkeypatch)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def make_cifar10_archive(path, per_batch_per_class=1, seed=0):
    """cifar-10-python.tar.gz as published: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta},
    each batch a pickled dict with a uint8 (N, 3072) 'data' array and a 'labels' list."""
    rng = np.random.default_rng(seed)
    batches, train_x, train_y = {}, [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [c for c in range(10) for _ in range(per_batch_per_class)]
        rng.shuffle(labels)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        batches[name] = {"batch_label": f"{name} of 6", "labels": labels, "data": data,
                         "filenames": [f"img_{k}.png" for k in range(len(labels))]}
        if name != "test_batch":
            train_x.append(data)
            train_y += labels
    with tarfile.open(path, "w:gz") as tf:
        _add(tf, "cifar-10-batches-py/batches.meta", pickle.dumps(
            {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10, "num_vis": 3072}, protocol=2))
        for name, batch in batches.items():
            _add(tf, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
    test = batches["test_batch"]
    return (torch.from_numpy(np.concatenate(train_x)).view(-1, 3, 32, 32), torch.tensor(train_y),
            torch.from_numpy(test["data"]).view(-1, 3, 32, 32), torch.tensor(test["labels"]))


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def serve_cifar10(monkeypatch, www, base, md5_override=None, truncate=False):
    archive = www / "cifar-10-python.tar.gz"
    arrays = make_cifar10_archive(archive)
    if truncate:
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    checksum = md5(archive) if md5_override is None else md5_override
    resource = dl.Resource("cifar-10-python.tar.gz", checksum, (base + "cifar-10-python.tar.gz",))
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (resource,))
    return arrays


def leftovers(directory):
    """Temporary files or folders left behind by a write or an extraction."""
    return [p for p in directory.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".part", ".partial")]


def test_download_checksum_ok_then_loads_from_cache(server, monkeypatch, cache):
    www, base = server
    train_x, train_y, test_x, test_y = serve_cifar10(monkeypatch, www, base)

    data = load_dataset("cifar10", val_size=0)
    assert data.info["source"] == "download"
    assert data.classes == CIFAR10_CLASSES
    assert torch.equal(data.train.images, train_x) and torch.equal(data.train.labels, train_y)
    assert torch.equal(data.test.images, test_x) and torch.equal(data.test.labels, test_y)
    assert (cache / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert (cache / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not leftovers(cache)

    # The second load needs no server: point the table at a dead URL.
    dead = dl.Resource("cifar-10-python.tar.gz", md5(www / "cifar-10-python.tar.gz"), (base + "gone.tar.gz",))
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dead,))
    again = load_dataset("cifar10", val_size=10, seed=3)
    assert again.info["source"] == "cache"
    assert len(again.train) == 40 and len(again.val) == 10
    assert torch.equal(torch.bincount(again.val.labels, minlength=10), torch.ones(10, dtype=torch.long))


def test_checksum_mismatch_removes_the_download(server, monkeypatch, cache):
    www, base = server
    serve_cifar10(monkeypatch, www, base, md5_override="0" * 32)
    with pytest.raises(dl.ChecksumError, match=r"checksum mismatch for cifar-10-python\.tar\.gz.*removed"):
        load_dataset("cifar10", val_size=10)
    assert not any(p.is_file() for p in cache.rglob("*")), "a bad download was left in the cache"
    assert not (cache / "cifar10" / "cifar-10-batches-py").exists()


def test_truncated_archive_is_named_and_removed(server, monkeypatch, cache):
    www, base = server
    serve_cifar10(monkeypatch, www, base, truncate=True)  # its md5 is "right": the table matches the cut file
    with pytest.raises(dl.ArchiveError, match=r"cifar-10-python\.tar\.gz is truncated or corrupt"):
        load_dataset("cifar10", val_size=10)
    assert not (cache / "cifar10" / "cifar-10-python.tar.gz").exists()
    assert not (cache / "cifar10" / "cifar-10-batches-py").exists()
    assert not leftovers(cache)


def test_server_down_gives_the_offline_message(monkeypatch, cache):
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    mirror = f"http://127.0.0.1:{port}/mirror/cifar-10-python.tar.gz"
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dl.Resource("cifar-10-python.tar.gz", "0" * 32, (url, mirror)),))
    with pytest.raises(dl.OfflineError) as err:
        load_dataset("cifar10", val_size=10)
    message = str(err.value)
    assert "\n" not in message and "refused" in message.lower()
    assert url in message and mirror in message and "cifar-10-python.tar.gz" in message
    assert str(cache / "cifar10") in message and "--data-dir" in message and "RESLAB_DATA" in message
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_no_download_means_not_found(tmp_path, cache):
    with pytest.raises(ReslabError, match=r"cifar10 not found: looked for cifar-10-python\.tar\.gz.*download=True"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    with pytest.raises(ReslabError, match="does not exist"):
        load_dataset("cifar10", data_dir=tmp_path / "nope")


def test_archive_in_data_dir_is_verified_and_extracted_to_the_cache(tmp_path, monkeypatch, cache):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = data_dir / "cifar-10-python.tar.gz"
    train_x, _, _, _ = make_cifar10_archive(archive, seed=1)

    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dl.Resource(archive.name, "f" * 32, ()),))
    with pytest.raises(dl.ChecksumError, match="replace it with the official file"):
        load_dataset("cifar10", data_dir=data_dir, val_size=0)
    assert archive.is_file(), "a user's own file must never be deleted"

    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dl.Resource(archive.name, md5(archive), ()),))
    monkeypatch.setenv("RESLAB_DATA", str(data_dir))  # the same directory, found through the variable
    data = load_dataset("cifar10", val_size=0)
    assert data.info["source"] == "data_dir"
    assert torch.equal(data.train.images, train_x)
    assert (cache / "cifar10" / "cifar-10-batches-py").is_dir()
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar100_fine_labels_and_names(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    names = [f"class_{i:02d}" for i in range(100)]
    split = {}
    for part, per_class in (("train", 2), ("test", 1)):
        fine = [c for c in range(100) for _ in range(per_class)]
        rng.shuffle(fine)
        split[part] = {"filenames": [f"f{k}" for k in range(len(fine))], "batch_label": part, "fine_labels": fine,
                       "coarse_labels": [c // 5 for c in fine],
                       "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        _add(tf, "cifar-100-python/meta", pickle.dumps(
            {"fine_label_names": names, "coarse_label_names": [f"super_{i}" for i in range(20)]}, protocol=2))
        for part, batch in split.items():
            _add(tf, f"cifar-100-python/{part}", pickle.dumps(batch, protocol=2))
    monkeypatch.setitem(dl.RESOURCES, "cifar100", (dl.Resource(archive.name, md5(archive), ()),))

    data = load_dataset("cifar100", data_dir=tmp_path, val_size=100)
    assert data.classes == names and data.channels == 3 and data.image_size == (32, 32)
    assert len(data.train) == 100 and len(data.val) == 100 and len(data.test) == 100
    assert torch.equal(torch.bincount(data.val.labels, minlength=100), torch.ones(100, dtype=torch.long))
    assert torch.equal(data.test.labels, torch.tensor(split["test"]["fine_labels"]))
    assert torch.equal(data.test.images, torch.from_numpy(split["test"]["data"]).view(-1, 3, 32, 32))


def test_a_tampered_batch_cannot_run_code(tmp_path, monkeypatch):
    witness = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(witness),)

    archive = tmp_path / "cifar-10-python.tar.gz"
    make_cifar10_archive(archive)
    with tarfile.open(archive) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    members["cifar-10-batches-py/data_batch_1"] = pickle.dumps({"data": Payload(), "labels": []}, protocol=2)
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in members.items():
            _add(tf, name, data)
    monkeypatch.setitem(dl.RESOURCES, "cifar10", (dl.Resource(archive.name, None, ()),))
    with pytest.raises(ReslabError, match=r"data_batch_1 is not a readable CIFAR batch .*refusing to load posix\.mkdir"):
        load_dataset("cifar10", data_dir=tmp_path, val_size=0)
    assert not witness.exists()


def test_unsafe_member_names_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        _add(tf, "ok/a.txt", b"fine")
        _add(tf, "../escaped.txt", b"outside")
    with pytest.raises(dl.ArchiveError, match="unsafe member name"):
        dl.extract_archive(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "target").exists() and not leftovers(tmp_path / "out")


def test_mnist_idx_files_download_with_mirror_fallback(server, monkeypatch, cache):
    www, base = server
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.arange(10, dtype=np.uint8),
    }
    resources = []
    for name, array in arrays.items():
        path = write_idx(www / name, array)
        # The first mirror is dead (404): the second must be used.
        resources.append(dl.Resource(name, md5(path), (base + "missing/" + name, base + name)))
    monkeypatch.setitem(dl.RESOURCES, "mnist", tuple(resources))

    data = load_dataset("mnist", val_size=0.2)
    assert data.info["source"] == "download" and data.classes == [str(d) for d in range(10)]
    assert len(data.train) == 24 and len(data.val) == 6 and data.train.images.shape[1:] == (1, 28, 28)
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte.gz"]))
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(arrays)
