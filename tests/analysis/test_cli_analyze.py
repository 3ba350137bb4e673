"""``reslab analyze`` end to end: analysis directories, reuse, the report over all, and bad input."""
import json

import pytest
from PIL import Image

from reslab.cli import main


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reslab: error:") and "\n" not in err, err
    return err


def test_gradients_writes_an_analysis_directory_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["analyze", "gradients", "plain20", "resnet20", "--images", "8", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "analysis.json").read_text())
    assert record["analysis"] == "gradients" and [t["label"] for t in record["targets"]] == ["plain20", "resnet20"]
    assert record["settings"] == {"data": "embedded", "images": 8, "seed": 0, "checkpoint": "last"}
    first = record["findings"][0]
    assert first.startswith("gradient norm of the first conv at initialisation: plain20 is ") and "x resnet20 (" in first
    assert first in printed and first in (out / "report.md").read_text()
    assert (out / "gradients.png").stat().st_size > 1000 and (out / "report.html").is_file()
    assert not any(a.startswith("/") for a in record["command"].split())  # no machine path recorded
    norms = record["measurements"]["model:plain20"]["states"]["init"]["norms"]
    assert len(norms) == 20 and all(v > 0 for v in norms)

    # the same command reuses; a new target is added; other settings are refused
    assert main([*argv[:4], "resnet56", *argv[4:]]) == 0
    printed = capsys.readouterr().out
    assert "plain20: measured before, reused" in printed and "resnet56: measured in" in printed
    again = json.loads((out / "analysis.json").read_text())
    assert again["measurements"]["model:plain20"] == record["measurements"]["model:plain20"]
    assert len(again["sessions"]) == 2
    err = _error(capsys, ["analyze", "gradients", "plain20", "--images", "16", "--out", str(out)])
    assert "other settings (images 8 -> 16)" in err


def test_without_out_the_directory_is_analyses_kind_targets(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "gradients", "plain20", "--images", "4", "--threads", "1"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "analyses" / "gradients-plain20" / "analysis.json").read_text())["analysis"] == "gradients"
    assert [p.name for p in (tmp_path / "analyses").iterdir()] == ["gradients-plain20"]


def test_run_analyses_and_one_report_over_all(run_dir, tmp_path, capsys, embedded):
    root = tmp_path / "analyses"
    common = ["--threads", "1", "--samples", "1"]
    assert main(["analyze", "lesion", str(run_dir), "--images", "20", "--out", str(root / "lesion"), *common]) == 0
    lesion = json.loads((root / "lesion" / "analysis.json").read_text())
    (m,) = lesion["measurements"].values()
    text = json.dumps(lesion)
    assert all(f"{c}{tmp_path}" not in text for c in '" :')  # relative paths only
    assert len(m["single"]) == 9 and sorted(m["random"], key=int) == [str(k) for k in range(1, 10)]
    assert lesion["findings"][0].startswith("r20 (residual, 20 test images): error ")
    assert main(["analyze", "blocks", str(run_dir), "--images", "10", "--out", str(root / "blocks"), *common]) == 0
    assert main(["analyze", "paths", "resnet20", "--images", "4", "--out", str(root / "paths"), *common]) == 0
    paths = json.loads((root / "paths" / "analysis.json").read_text())
    assert paths["measurements"]["model:resnet20"]["distribution"][0] == 1 / 2 ** 9
    png = tmp_path / "shoe.png"
    Image.fromarray(embedded.test.images[0, 0].numpy()).save(png)
    assert main(["analyze", "cam", str(run_dir), str(png), "--out", str(root / "cam")]) == 0
    assert Image.open(root / "cam" / "overlay.png").size == (28, 28)
    capsys.readouterr()
    assert main(["analyze", "report", str(root)]) == 0
    report = (root / "report.md").read_text()
    for name in ("lesion/lesion.png", "blocks/blocks.png", "paths/paths.png", "cam/overlay.png"):
        assert f"]({name})" in report
    assert "r20: Spearman rho = " in report and "over 9 blocks" in report  # blocks vs lesion, the same run
    for sub in ("lesion", "blocks", "paths", "cam"):
        for f in json.loads((root / sub / "analysis.json").read_text())["findings"]:
            assert f in report


@pytest.mark.parametrize("argv,message", [
    (["gradients", "resnet56x"], "unknown model 'resnet56x'"),
    (["paths", "plain20"], "plain20 is a plain net"),
    (["paths", "lenet5"], "lenet5 has no residual blocks"),
    (["lesion", "resnet20"], "lesion measures trained nets: give run directories"),
    (["gradients"], "give at least 1 model name"),
    (["gradients", "resnet20", "--images", "1"], "--images must be at least 2"),
    (["landscapes", "resnet20"], "unknown analysis 'landscapes'"),
    (["cam", "resnet20"], "cam takes a run directory and an image"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    err = _error(capsys, ["analyze", *argv, "--out", str(out)])
    assert message in err
    assert not out.exists()


def test_bad_paths_are_one_line(run_dir, tmp_path, capsys):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    assert "is not a run directory" in _error(capsys, ["analyze", "gradients", str(folder), "--out", str(tmp_path / "o")])
    assert "not found" in _error(capsys, ["analyze", "blocks", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()
    # an --out that holds something else is never written into
    err = _error(capsys, ["analyze", "gradients", "resnet20", "--out", str(folder)])
    assert "is not an analysis directory" in err and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    text = tmp_path / "cat.png"
    text.write_text("not an image")
    assert "cannot decode image" in _error(capsys, ["analyze", "cam", str(run_dir), str(text), "--out", str(tmp_path / "c")])
    assert "holds no analysis directory" in _error(capsys, ["analyze", "report", str(folder)])
    real = tmp_path / "grey.png"
    Image.new("L", (28, 28), 128).save(real)
    assert "out of range" in _error(capsys, ["analyze", "cam", str(run_dir), str(real), "--class", "10",
                                             "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_predict_cam_writes_an_overlay_per_image(run_dir, tmp_path, capsys, embedded):
    from reslab.cli import main as cli

    images = []
    for i in range(2):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(embedded.test.images[i, 0].numpy()).save(images[-1])
    assert cli(["predict", str(run_dir), *map(str, images), "--cam", str(tmp_path / "cams"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for i in range(2):
        dst = tmp_path / "cams" / f"img{i}_cam.png"
        assert "Grad-CAM of " in out and str(dst) in out
        assert Image.open(dst).size == (28, 28) and Image.open(dst).mode == "RGB"
    err = _error(capsys, ["predict", str(run_dir), str(images[0]), "--cam", str(tmp_path / "c2"), "--runtime", "onnxruntime"])
    assert "--cam needs the eager model's gradients" in err and not (tmp_path / "c2").exists()
