"""Hostile input is bounded: archive members and image dimensions are checked from their headers
before anything is read or decoded, nothing is opened that is not a regular file, unsafe archive
members are refused, and every refusal is one line, with nothing left half-written.

The hostile files are crafted small: a 3 GiB member is only declared in a tar header, a 2 GiB
member is a hole in a sparse file, a 40000x40000 PNG is 4.7 MB of one repeated deflate block.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import download as dl
from reslab.data import load_dataset
from reslab.data.decode import decode_bytes
from reslab.data.idx import read_idx
from reslab.data.loader import FileLoader
from reslab.data.splits import FileImages, TensorImages
from reslab.data.transforms import Normalizer, ResizeCenterCrop
from reslab.errors import ReslabError

GiB = 1 << 30


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("RESLAB_CACHE", str(path))
    for name in ("RESLAB_MAX_MEMBER_BYTES", "RESLAB_MAX_ARCHIVE_BYTES", "RESLAB_MAX_IMAGE_PIXELS"):
        monkeypatch.delenv(name, raising=False)
    return path


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


# --------------------------------------------------------------------------------------------
# Crafting hostile files, small and fast


def png_bytes(w=8, h=8, seed=0, mode="RGB") -> bytes:
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


def png_bomb(w: int, h: int) -> bytes:
    """A valid all-black RGB PNG of w x h: its 3 * w * h bytes of pixels are one deflate block of
    1 MiB of zeros, repeated (4.7 MB for 40000 x 40000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    n = h * (1 + 3 * w)  # a filter byte, then the row
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every further MiB
    body = [block] * (n >> 20) + [c.compress(bytes(n & ((1 << 20) - 1))) + c.flush()]
    idat = b"\x78\xda" + b"".join(body) + struct.pack(">I", ((n % 65521) << 16) | 1)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_claiming(w: int, h: int) -> bytes:
    """A real 16x16 JPEG whose frame header claims w x h."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def write_folder(root: Path, per_class: dict[str, int], size=(8, 8)) -> None:
    for k, (cls, n) in enumerate(per_class.items()):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            (root / cls / f"{j:03d}.png").write_bytes(png_bytes(size[1], size[0], seed=100 * k + j))


def tar_info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname = size, kind, link
    return info


def images(per_class: dict[str, int], prefix="imgs/") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{c}/{j}.png", png_bytes(seed=10 * k + j)) for k, (c, n) in enumerate(per_class.items())
            for j in range(n)]


def write_tar(path: Path, members: list, mode="w:gz") -> Path:
    """``members``: (name, bytes) files, or (TarInfo, bytes | None) as they are."""
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            info = name if isinstance(name, tarfile.TarInfo) else tar_info(name, len(data))
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def sparse_tar(path: Path, before: list, huge: tuple[str, int], after: list) -> Path:
    """A plain tar with a member of ``huge[1]`` bytes whose data is a hole: the file is sparse, a few KB on disk."""
    with open(path, "wb") as f:
        for name, data in before:
            f.write(tar_info(name, len(data)).tobuf() + data + bytes(-len(data) % 512))
        f.write(tar_info(*huge).tobuf())
        f.seek(huge[1] + (-huge[1] % 512), os.SEEK_CUR)  # the member's data: a hole of zeros
        for name, data in after:
            f.write(tar_info(name, len(data)).tobuf() + data + bytes(-len(data) % 512))
        f.write(bytes(1024))
    return path


def declared_member_tar_gz(path: Path, size: int) -> Path:
    """A .tar.gz of a few images, then the header of ``imgs/a/huge.png`` declaring ``size`` bytes, and
    only 4 KiB of its data: reading it whole would take ``size`` bytes of memory."""
    body = b"".join(tar_info(n, len(d)).tobuf() + d + bytes(-len(d) % 512) for n, d in images({"a": 2, "b": 2}))
    path.write_bytes(zlib.compress(body + tar_info("imgs/a/huge.png", size).tobuf() + bytes(4096), wbits=31))
    return path


# --------------------------------------------------------------------------------------------
# Peak memory of the bombs, measured in a fresh process (this one's high-water mark says nothing)


MEASURE = r"""
import json, resource, sys
from reslab.data import load_dataset
from reslab.errors import ReslabError

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

out = {}
load_dataset(f"imagefolder:{sys.argv[1]}", val_size=0)  # imports and warms the decoders
for name in sys.argv[2:]:
    before = peak_mb()
    try:
        load_dataset(f"imagefolder:{name}", val_size=0)
        message = None
    except ReslabError as e:
        message = str(e)
    out[name] = {"delta_mb": peak_mb() - before, "error": message}
print(json.dumps(out))
"""


def test_bombs_are_refused_from_their_headers_in_little_memory(tmp_path, cache):
    warm = tmp_path / "warm"
    write_folder(warm, {"a": 2, "b": 2})
    member = declared_member_tar_gz(tmp_path / "member3g.tar.gz", 3 * GiB)
    png = tmp_path / "png"
    write_folder(png, {"a": 2, "b": 2})
    (png / "a" / "bomb.png").write_bytes(png_bomb(40000, 40000))
    assert (png / "a" / "bomb.png").stat().st_size < 5_000_000
    jpg = tmp_path / "jpg"
    write_folder(jpg, {"a": 2, "b": 2})
    (jpg / "b" / "bomb.jpg").write_bytes(jpeg_claiming(40000, 40000))
    env = {**os.environ, "RESLAB_CACHE": str(cache)}
    run = subprocess.run([sys.executable, "-c", MEASURE, str(warm), str(member), str(png), str(jpg)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for name, got in result.items():
        assert got["delta_mb"] < 100, (name, got)  # 6.9 GB, 5.4 GB and more before the headers were checked
        assert got["error"] is not None and "\n" not in got["error"], (name, got)
    assert "'imgs/a/huge.png' is 3 GiB uncompressed, over the 256 MiB limit per member" in result[str(member)]["error"]
    assert "RESLAB_MAX_MEMBER_BYTES" in result[str(member)]["error"]
    for folder, file in ((png, png / "a" / "bomb.png"), (jpg, jpg / "b" / "bomb.jpg")):
        error = result[str(folder)]["error"]
        assert f"cannot decode image {file} (40000x40000 is 1,600,000,000 pixels, over the 89,478,485-pixel" in error
        assert "RESLAB_MAX_IMAGE_PIXELS" in error and "skip_bad=True (--skip-bad)" in error
    assert not files_under(cache / "imagefolder" / "extracted")


def test_oversized_member_is_refused_before_extraction_and_leaves_nothing(tmp_path, cache):
    archive = declared_member_tar_gz(tmp_path / "member3g.tar.gz", 3 * GiB)
    with pytest.raises(dl.ArchiveLimitError, match=r"huge\.png' is 3 GiB uncompressed, over the 256 MiB limit"):
        load_dataset(f"imagefolder:{archive}", stream=True)
    assert not files_under(cache) and not list((cache / "imagefolder" / "extracted").iterdir())
    with pytest.raises(dl.ArchiveLimitError, match="RESLAB_MAX_MEMBER_BYTES"):
        dl.extract_archive(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_member_limit_is_raisable_and_applies_to_zip(tmp_path, cache, monkeypatch):
    members = images({"a": 3, "b": 3})
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    biggest = max(len(d) for _, d in members)
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", str(biggest - 1))
    with pytest.raises(dl.ArchiveLimitError, match=rf"over the {biggest - 1} bytes limit per member; if it is "
                                                   "genuine, raise \\$RESLAB_MAX_MEMBER_BYTES"):
        load_dataset(f"imagefolder:{archive}")
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", "1K")
    assert len(load_dataset(f"imagefolder:{archive}", val_size=0).train) == 6
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", "lots")
    (tmp_path / "copy.zip").write_bytes(archive.read_bytes())  # not cached yet
    with pytest.raises(ReslabError, match=r"\$RESLAB_MAX_MEMBER_BYTES='lots' is not a positive byte count"):
        load_dataset(f"imagefolder:{tmp_path / 'copy.zip'}")


def test_huge_non_image_member_is_skipped_never_extracted(tmp_path, cache):
    members = images({"a": 2, "b": 2})
    archive = sparse_tar(tmp_path / "video.tar", members[:2], ("imgs/a/video.bin", 2 * GiB), members[2:])
    assert archive.stat().st_size > 2 * GiB and archive.stat().st_blocks * 512 < 1 << 20  # sparse
    data = load_dataset(f"imagefolder:{archive}", val_size=0)
    assert isinstance(data.train, TensorImages) and len(data.train) == 4 and data.classes == ["a", "b"]
    streamed = load_dataset(f"imagefolder:{archive}", val_size=0, stream=True)
    assert isinstance(streamed.train, FileImages) and len(streamed.train) == 4
    extracted = files_under(cache / "imagefolder" / "extracted")
    assert [p.name for p in extracted] == ["0.png", "1.png", "0.png", "1.png"]  # images only
    assert sum(p.stat().st_size for p in files_under(cache)) < 1 << 20
    assert not [p for p in (cache / "imagefolder" / "extracted").iterdir() if p.name.startswith(".")]


def test_non_image_members_of_a_tar_gz_are_skipped_whatever_their_size(tmp_path, cache, monkeypatch):
    members = images({"a": 2, "b": 2})
    archive = write_tar(tmp_path / "notes.tar.gz", members[:2] + [("imgs/a/notes.bin", bytes(1 << 20))] + members[2:])
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", "64K")  # the images fit, the skipped member does not
    assert len(load_dataset(f"imagefolder:{archive}", val_size=0).train) == 4
    streamed = load_dataset(f"imagefolder:{archive}", val_size=0, stream=True)
    assert len(streamed.train) == 4 and "notes.bin" not in {p.name for p in files_under(cache)}


def test_total_expansion_is_bounded(tmp_path, cache, monkeypatch):
    members = images({"a": 2, "b": 2})
    archive = sparse_tar(tmp_path / "video.tar", members[:2], ("imgs/a/video.bin", 2 * GiB), members[2:])
    monkeypatch.setenv("RESLAB_MAX_ARCHIVE_BYTES", "1G")
    for stream in (None, True):
        with pytest.raises(dl.ArchiveLimitError, match=r"video\.tar expands to over 1 GiB .*raise "
                                                       r"\$RESLAB_MAX_ARCHIVE_BYTES"):
            load_dataset(f"imagefolder:{archive}", stream=stream)
    assert not files_under(cache)
    monkeypatch.setenv("RESLAB_MAX_ARCHIVE_BYTES", "3G")
    assert len(load_dataset(f"imagefolder:{archive}", val_size=0).train) == 4


def test_a_header_claiming_gigabytes_of_long_name_is_not_read(tmp_path, cache):
    raw = tar_info("././@LongLink", 3 * GiB, tarfile.GNUTYPE_LONGNAME).tobuf(format=tarfile.GNU_FORMAT)
    archive = tmp_path / "longname.tar.gz"
    archive.write_bytes(zlib.compress(raw + bytes(4096), wbits=31))
    with pytest.raises(dl.ArchiveLimitError, match=r"a header that declares 3 GiB of data, over the 256 MiB limit"):
        load_dataset(f"imagefolder:{archive}")


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_good_archives_of_every_compression_still_load(tmp_path, cache, mode):
    members = images({"a": 2, "b": 3})
    archive = write_tar(tmp_path / f"set.tar{mode[1:].replace(':', '.')}", members, mode)
    data = load_dataset(f"imagefolder:{archive}", val_size=0)
    assert data.classes == ["a", "b"] and len(data.train) == 5 and data.info["resized"] == []
    expected = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(d)))).permute(2, 0, 1) for _, d in members])
    assert torch.equal(data.train.images, expected)
    streamed = load_dataset(f"imagefolder:{archive}", val_size=0, stream=True)
    assert len(streamed.train) == 5


# --------------------------------------------------------------------------------------------
# Unsafe members


UNSAFE = {
    "dotdot": (tar_info("../evil.png", 0), "unsafe member name '../evil.png'"),
    "absolute": (tar_info("/tmp/evil.png", 0), "unsafe member name '/tmp/evil.png'"),
    "symlink": (tar_info("imgs/a/link.png", 0, tarfile.SYMTYPE, "/etc/passwd"),
                "unsafe member 'imgs/a/link.png': a symbolic link to '/etc/passwd'"),
    "hardlink": (tar_info("imgs/a/hard.png", 0, tarfile.LNKTYPE, "imgs/a/0.png"),
                 "unsafe member 'imgs/a/hard.png': a hard link to 'imgs/a/0.png'"),
    "device": (tar_info("imgs/a/dev.png", 0, tarfile.CHRTYPE), "unsafe member 'imgs/a/dev.png': a device file"),
    "fifo": (tar_info("imgs/a/pipe.png", 0, tarfile.FIFOTYPE), "unsafe member 'imgs/a/pipe.png': a FIFO"),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_tar_members_are_refused_as_unsafe(tmp_path, cache, kind):
    info, message = UNSAFE[kind]
    archive = write_tar(tmp_path / f"{kind}.tar.gz", [*images({"a": 2, "b": 2}), (info, b"" if info.isfile() else None)])
    for stream in (None, True):
        with pytest.raises(dl.UnsafeArchiveError) as caught:
            load_dataset(f"imagefolder:{archive}", stream=stream)
        text = str(caught.value)
        assert message in text and "truncated or corrupt" not in text and "\n" not in text
    assert not files_under(cache) and not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_unsafe_zip_members_are_refused(tmp_path, cache):
    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as zf:
        for name, data in images({"a": 2, "b": 2}):
            zf.writestr(name, data)
        zf.writestr("../../evil.png", png_bytes())
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        for name, data in images({"a": 2, "b": 2}):
            zf.writestr(name, data)
        info = zipfile.ZipInfo("imgs/a/link.png")
        info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    for archive, message in ((escape, "unsafe member name '../../evil.png'"),
                             (link, "unsafe member 'imgs/a/link.png': a symbolic link")):
        for stream in (None, True):
            with pytest.raises(dl.UnsafeArchiveError, match=message):
                load_dataset(f"imagefolder:{archive}", stream=stream)
    assert not files_under(cache)


# --------------------------------------------------------------------------------------------
# Image dimensions


def test_pixel_limit_applies_to_every_decoder_and_is_raisable(tmp_path, cache, monkeypatch):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2}, size=(10, 11))  # 110 pixels each
    Image.open(root / "a" / "000.png").save(root / "a" / "bmp.bmp")  # a format only PIL reads
    monkeypatch.setenv("RESLAB_MAX_IMAGE_PIXELS", "109")
    with pytest.raises(ReslabError, match=r"000\.png \(11x10 is 110 pixels, over the 109-pixel limit .*"
                                          r"RESLAB_MAX_IMAGE_PIXELS"):
        load_dataset(f"imagefolder:{root}")
    with pytest.raises(ReslabError, match=r"bmp\.bmp \(11x10 is 110 pixels"):
        decode_bytes_named(root / "a" / "bmp.bmp")
    with pytest.raises(ReslabError, match=r"cannot decode image .*000\.png \(11x10 is 110 pixels"):
        FileImages([(str(root / "a" / "000.png"), 0)], 3).load(0)
    monkeypatch.setenv("RESLAB_MAX_IMAGE_PIXELS", "110")
    data = load_dataset(f"imagefolder:{root}", val_size=0)
    assert data.image_size == (10, 11) and len(data.train) == 5


def decode_bytes_named(path: Path):
    from reslab.data.decode import BadImage, bad_image_error

    try:
        return decode_bytes(path.read_bytes())
    except BadImage as e:
        raise bad_image_error(str(path), str(e)) from None


def test_a_raised_pixel_limit_reaches_pil(tmp_path, cache, monkeypatch):
    # PIL itself refuses images over twice its MAX_IMAGE_PIXELS; a raised reslab limit lets them through.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    Image.new("P", (12, 12)).save(tmp_path / "palette.png")  # palette PNGs go through PIL
    monkeypatch.setenv("RESLAB_MAX_IMAGE_PIXELS", "200")
    assert decode_bytes((tmp_path / "palette.png").read_bytes()).shape == (3, 12, 12)


def test_pixel_bomb_is_skipped_and_counted_with_skip_bad(tmp_path, cache):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    (root / "a" / "0-bomb.png").write_bytes(png_bomb(20000, 20000))
    data = load_dataset(f"imagefolder:{root}", skip_bad=True, val_size=0)
    assert isinstance(data.train, TensorImages) and len(data.train) == 4
    assert data.info["skipped"] == [str(root / "a" / "0-bomb.png")]
    streamed = load_dataset(f"imagefolder:{root}", skip_bad=True, val_size=0, stream=True)
    assert streamed.info["skipped"] == [str(root / "a" / "0-bomb.png")] and len(streamed.train) == 4
    with pytest.raises(ReslabError, match=r"0-bomb\.png \(20000x20000 is 400,000,000 pixels"):
        load_dataset(f"imagefolder:{root}", stream=True)  # the header probe starts with it


def test_a_streamed_bomb_found_in_a_loader_worker_is_one_line(tmp_path, cache, monkeypatch):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    (root / "b" / "zz-bomb.png").write_bytes(png_bomb(20000, 20000))
    monkeypatch.setattr("reslab.data.imagefolder.PROBE_ALL", 0)  # as in a large folder: the probe stops at the first colour image
    data = load_dataset(f"imagefolder:{root}", val_size=0, stream=True)
    loader = FileLoader(data.train, 8, transform=ResizeCenterCrop(8, 8), device=torch.device("cpu"), train=False,
                        normalizer=Normalizer.fit("none", torch.zeros(1, 3, 8, 8, dtype=torch.uint8)), num_workers=1)
    with pytest.raises(ReslabError) as caught:
        list(loader)
    assert str(caught.value).startswith(f"cannot decode image {root / 'b' / 'zz-bomb.png'} (20000x20000 is")
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Files that are not regular files


def load_in_thread(timeout: float = 30, **kwargs):
    """load_dataset in a thread: a call that blocks fails the test instead of hanging it."""
    box: dict = {}

    def work():
        try:
            box["result"] = load_dataset(**kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return thread.is_alive(), box


def release(fifo: Path) -> None:
    """Unblock a reader stuck on ``fifo`` (a regression), so the thread ends."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_a_fifo_is_refused_never_opened(tmp_path, cache):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    fifo = root / "a" / "x.jpg"
    os.mkfifo(fifo)
    try:
        for stream in (None, True):
            stuck, box = load_in_thread(name=f"imagefolder:{root}", stream=stream)
            assert not stuck, "loading blocked on a FIFO"
            assert isinstance(box.get("error"), ReslabError), box
            assert f"image {fifo} (not a regular file but a FIFO)" in str(box["error"])
            stuck, box = load_in_thread(name=f"imagefolder:{root}", stream=stream, skip_bad=True, val_size=0)
            assert not stuck and box["result"].info["skipped"] == [str(fifo)] and len(box["result"].train) == 4
        with pytest.raises(ReslabError, match="not a regular file but a FIFO"):
            FileImages([(str(fifo), 0)], 3).load(0)
        os.mkfifo(tmp_path / "pipe.tar.gz")
        stuck, box = load_in_thread(name=f"imagefolder:{tmp_path / 'pipe.tar.gz'}")
        assert not stuck and "is a FIFO, neither a folder nor" in str(box["error"])
    finally:
        release(fifo)
        release(tmp_path / "pipe.tar.gz")


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_symlinks_are_bad_images_named(tmp_path, cache, kind):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    link = root / "b" / "link.png"
    if kind == "dangling":
        link.symlink_to(root / "b" / "gone.png")
        why = f"a dangling symbolic link to '{root / 'b' / 'gone.png'}'"
    else:
        link.symlink_to(root / "b" / "other.png")
        (root / "b" / "other.png").symlink_to(link)
        why = "a symbolic link loop"
    bad = [link] if kind == "dangling" else [link, root / "b" / "other.png"]
    for stream in (None, True):
        with pytest.raises(ReslabError) as caught:
            load_dataset(f"imagefolder:{root}", stream=stream)
        assert f"image {link} ({why})" in str(caught.value) and "--skip-bad" in str(caught.value)
        data = load_dataset(f"imagefolder:{root}", stream=stream, skip_bad=True, val_size=0)
        assert sorted(data.info["skipped"]) == sorted(map(str, bad)) and len(data.train) == 4
    (root / "a" / "good.png").symlink_to(root / "a" / "000.png")  # a link to a regular file is followed
    (root / "b" / "link.png").unlink()
    if kind == "loop":
        (root / "b" / "other.png").unlink()
    assert len(load_dataset(f"imagefolder:{root}", val_size=0).train) == 5


def test_a_folder_symlink_loop_is_listed_once(tmp_path, cache, caplog):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    (root / "a" / "again").symlink_to(root)  # imgs/a/again/a/again/... if followed
    with caplog.at_level(logging.WARNING, logger="reslab"):
        data = load_dataset(f"imagefolder:{root}", val_size=0)
    assert len(data.train) == 4 and "not following a/again again" in caplog.text


# --------------------------------------------------------------------------------------------
# Layout: odd sizes, empty class folders, one class


def test_a_few_odd_sized_images_are_resized_not_streamed(tmp_path, cache, caplog):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 50, "b": 50}, size=(8, 8))
    odd = root / "b" / "odd.png"
    odd.write_bytes(png_bytes(14, 10, seed=7))
    for attempt in range(2):  # decoded, then from the cache: reported both times
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="reslab"):
            data = load_dataset(f"imagefolder:{root}", val_size=0)
        assert isinstance(data.train, TensorImages) and data.image_size == (8, 8) and len(data.train) == 101
        assert data.info["resized"] == [str(odd)] and data.info["decoded"] == (101 if attempt == 0 else 0)
        lines = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
        assert len(lines) == 1 and f"1 of 101 images are not 8x8 like the rest (e.g. {odd})" in lines[0]
    # The odd image is resized to cover 8x8 and centre-cropped, as image_size would.
    resized = load_dataset(f"imagefolder:{root}", val_size=0, image_size=8)
    assert torch.equal(data.train.images, resized.train.images)
    assert isinstance(load_dataset(f"imagefolder:{root}", stream=False, val_size=0).train, TensorImages)
    # Two odd ones in 102 are too many: streamed (or refused where memory is insisted on), as before.
    (root / "a" / "odd2.png").write_bytes(png_bytes(9, 9))
    assert isinstance(load_dataset(f"imagefolder:{root}", val_size=0).train, FileImages)
    with pytest.raises(ReslabError, match=r"differ in size .*2 of 102 are not 8x8.*pass image_size"):
        load_dataset(f"imagefolder:{root}", stream=False)


def test_a_few_odd_sized_images_in_an_archive_are_resized(tmp_path, cache):
    members = [(f"{c}/{j}.png", png_bytes(seed=10 * k + j)) for k, c in enumerate("ab") for j in range(60)]
    members.insert(3, ("a/odd.png", png_bytes(5, 12)))
    archive = write_tar(tmp_path / "odd.tar.gz", members)
    data = load_dataset(f"imagefolder:{archive}", val_size=0)
    assert isinstance(data.train, TensorImages) and data.image_size == (8, 8) and len(data.train) == 121
    assert data.info["resized"] == [f"{archive}:a/odd.png"]


def test_an_empty_class_folder_is_reported(tmp_path, cache, caplog):
    root = tmp_path / "imgs"
    write_folder(root, {"a": 2, "b": 2})
    (root / "zebra").mkdir()
    (root / "b" / "deeper").mkdir()  # inside a class: not a class folder
    with caplog.at_level(logging.WARNING, logger="reslab"):
        data = load_dataset(f"imagefolder:{root}", val_size=0)
    assert data.classes == ["a", "b"]
    lines = [r.getMessage() for r in caplog.records if "empty class folder" in r.getMessage()]
    assert len(lines) == 1 and "ignoring empty class folder zebra/ (no .jpg/" in lines[0]
    archive = write_tar(tmp_path / "split.tar.gz", [(f"set/train/{n}", d) for n, d in images({"a": 2, "b": 2}, "")]
                        + [(tar_info("set/train/zebra", 0, tarfile.DIRTYPE), None),
                           ("set/test/a/0.png", png_bytes()), ("set/test/b/readme.txt", b"no images here")])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reslab"):
        data = load_dataset(f"imagefolder:{archive}", val_size=0)
    assert data.classes == ["a", "b"] and len(data.test) == 1
    assert "ignoring empty class folders test/b/, train/zebra/" in caplog.text


def test_one_class_is_refused(tmp_path, cache):
    root = tmp_path / "imgs"
    write_folder(root, {"cats": 3})
    (root / "dogs").mkdir()
    with pytest.raises(ReslabError, match=r"imgs has one class folder \(cats/\); a classifier needs at least two"):
        load_dataset(f"imagefolder:{root}")
    archive = write_tar(tmp_path / "one.tar.gz", images({"cats": 3}))
    with pytest.raises(ReslabError, match=r"one\.tar\.gz has one class folder \(cats/\)"):
        load_dataset(f"imagefolder:{archive}")
    assert not files_under(cache / "imagefolder" / "tensors")


# --------------------------------------------------------------------------------------------
# IDX files


def test_a_gzip_bomb_posing_as_idx_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(zlib.compress(bytes([0, 0, 8, 1, 0, 0, 8, 0]) + bytes(2048), wbits=31))
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", "1K")
    with pytest.raises(ReslabError, match=r"decompresses to over 1 KiB.*RESLAB_MAX_MEMBER_BYTES"):
        read_idx(path)
    monkeypatch.setenv("RESLAB_MAX_MEMBER_BYTES", "4K")
    assert read_idx(path).shape == (2048,)
