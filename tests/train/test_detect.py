"""Detection in the one training loop, as a user runs it: `reslab train maskrcnn_* --data pennfudan:PATH`,
eval, predict, resume, the run report, the transfer experiment, and bad input."""

import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from reslab.cli import main
from reslab.rundir import read_metrics

# A tiny detector budget: 96-pixel images, 2 images a batch, 2 steps.
SMALL = ["--batch-size", "2", "--arch", "box_detections_per_img=10", "--set", "image_size=96", "--set", "scale_range=[80,112]", "--set", "warmup_iters=1",
         "--set", "log_every=1", "--no-progress", "--set", "tensorboard=false", "--device", "cpu"]


def _pennfudan_tree(root, n=10, seed=0):
    """Penn-Fudan's layout (PNGImages/NAME.png, PedMasks/NAME_mask.png with one id a person) with
    bright upright boxes on a noisy background, 96x128 pixels."""
    rng = np.random.default_rng(seed)
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    for i in range(n):
        img = rng.integers(0, 90, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        for person in (1, 2):
            x = int(rng.integers(4, 50)) + (person - 1) * 60
            y, h, w = int(rng.integers(4, 30)), int(rng.integers(40, 60)), int(rng.integers(14, 24))
            mask[y:y + h, x:x + w] = person
            img[y:y + h, x:x + w] = (220, 60 + 40 * person, 40)
        Image.fromarray(img).save(root / "PNGImages" / f"P{i:03d}.png")
        Image.fromarray(mask).save(root / "PedMasks" / f"P{i:03d}_mask.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _pennfudan_tree(tmp_path_factory.mktemp("pf") / "PennFudanPed")


@pytest.fixture(scope="module")
def run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "det"
    assert main(["train", "maskrcnn_resnet18_fpn", "--data", f"pennfudan:{tree}", "--iterations", "2", "--out", str(out),
                 *SMALL]) == 0
    return out


def test_train_logs_each_loss_and_tests_by_coco_ap(run):
    records = read_metrics(run / "metrics.jsonl")
    start = next(r for r in records if r["event"] == "start")
    assert (start["train"], start["test"]) == (7, 2)  # 10 images: 2 held out for the test, 1 for validation
    steps = [r for r in records if r["event"] == "step"]
    # torchvision's Mask R-CNN losses, each logged, and their sum is the loss
    parts = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
    assert len(steps) == 2 and all(k in steps[0] for k in parts)
    assert steps[0]["loss"] == pytest.approx(sum(steps[0][k] for k in parts), rel=1e-5)
    epoch = next(r for r in records if r["event"] == "epoch")
    assert all(f"train_{k}" in epoch for k in parts) and "val_box_ap" in epoch and "val_mask_ap" in epoch
    assert epoch["val_err"] == pytest.approx(100 * (1 - epoch["val_box_ap"]))
    test = next(r for r in records if r["event"] == "test")
    assert test["n"] == 2 and set(test["bbox"]) >= {"AP", "AP50", "AP75"} and set(test["segm"]) >= {"AP", "AP50"}
    for f in ("eval-test.json", "eval-val.json", "plots/detection-test.png", "plots/detection-val.png"):
        assert (run / f).is_file(), f
    report = (run / "report.md").read_text()
    assert "box AP" in report or "boxes" in report
    assert "plots/detection-val.png" in report and "| classifier |" in report


def test_eval_prints_ap_of_boxes_and_masks(run, capsys):
    assert main(["eval", str(run), "--device", "cpu", "--amp", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "boxes" in out and "masks" in out and "test (COCO protocol via pycocotools, best checkpoint, 2 images)" in out
    saved = json.loads((run / "eval-test.json").read_text())
    assert saved["n"] == 2 and "bbox" in saved and "segm" in saved


def test_predict_draws_on_a_png_of_the_input_size(run, tree, tmp_path, capsys):
    src = tree / "PNGImages" / "P000.png"
    big = tmp_path / "street.jpg"
    Image.open(src).resize((200, 150)).save(big)
    assert main(["predict", str(run), str(big), "--out", str(tmp_path / "det"), "--score-threshold", "0",
                 "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(str(big)) and line.endswith(str(tmp_path / "det" / "street_det.png"))
    assert Image.open(tmp_path / "det" / "street_det.png").size == (200, 150)


def test_resume_is_exact(tree, tmp_path):
    args = ["train", "maskrcnn_resnet18_fpn", "--data", f"pennfudan:{tree}", *SMALL]
    assert main([*args, "--iterations", "2", "--out", str(tmp_path / "a"), "--set", "val_size=0"]) == 0
    assert main([*args, "--iterations", "1", "--out", str(tmp_path / "b"), "--set", "val_size=0"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--iterations", "2", "--no-progress"]) == 0
    a = load_file(tmp_path / "a" / "checkpoints" / "last.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def _rgb_folder(root, per_class=12):
    """A class-per-folder tree of 32x32 RGB images (red-ish and blue-ish squares) to pretrain on."""
    rng = np.random.default_rng(1)
    for c, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
            img[8:24, 8:24] = colour
            Image.fromarray(img).save(root / f"c{c}" / f"{i}.png")
    return root


def test_transfer_experiment_reports_random_vs_pretrained(tree, tmp_path, capsys):
    out = tmp_path / "transfer"
    folder = _rgb_folder(tmp_path / "rgb")
    assert main(["reproduce", "transfer", "--budget", "tiny", "--data", f"pennfudan:{tree}", "--pretrain-data",
                 f"imagefolder:{folder}", "--detectors", "fasterrcnn_resnet18_fpn", "--out", str(out),
                 "--device", "cpu"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"fasterrcnn_resnet18_fpn-random", "fasterrcnn_resnet18_fpn-pretrained"}
    report = (out / "report.md").read_text()
    assert "| `fasterrcnn_resnet18_fpn` | random |" in report and "| `fasterrcnn_resnet18_fpn` | pretrained |" in report
    assert (out / "plots" / "transfer.png").is_file() and "What this can and cannot show" in report
    cfg = (out / "fasterrcnn_resnet18_fpn-pretrained" / "config.yaml").read_text()
    assert "init_from:" in cfg and "pretrain" in cfg
    meta = json.loads((out / "experiment.json").read_text())
    assert meta["pretrain"]["run"] == "pretrain"  # portable: no absolute path recorded
    assert not any(a.startswith("/") or ":/" in a for a in meta["command"].split())


@pytest.mark.parametrize("args, words", [
    (["train", "resnet18", "--data", "pennfudan:{tree}", "--recipe", "short_cpu"], "a detector for its boxes, e.g. "
     "maskrcnn_resnet18_fpn"),
    (["train", "maskrcnn_resnet18_fpn", "--data", "embedded"], "is a detector but embedded has no boxes"),
    (["train", "maskrcnn_resnet18_fpn", "--data", "pennfudan:{tree}", "--set", "normalize=per_channel"],
     "detectors take [0, 1] pixels"),
    (["train", "maskrcnn_resnet18_fpn", "--data", "pennfudan:{tree}", "--set", "augment=pad_crop_flip"],
     "detection takes none, flip or scale_crop_flip"),
    (["reproduce", "transfer", "--detectors", "resnet18"], "resnet18 is not a detector"),
])
def test_bad_input_is_one_line_and_exit_2(tree, tmp_path, capsys, args, words):
    args = [a.replace("{tree}", str(tree)) for a in args]
    if args[0] == "train":
        args += ["--iterations", "1", "--out", str(tmp_path / "x"), *SMALL]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "x").exists()


def test_bad_detection_inputs_named_in_one_line(run, tree, tmp_path, capsys):
    from reslab.models import create_model
    from reslab.models.weights import save_weights

    # an --init-from whose backbone does not match the detector's
    save_weights(create_model("resnet20", num_classes=10), tmp_path / "r20.safetensors")
    cases = [(["train", "maskrcnn_resnet18_fpn", "--data", f"pennfudan:{tree}", "--init-from",
               str(tmp_path / "r20.safetensors"), "--iterations", "1", "--out", str(tmp_path / "x"), *SMALL],
              "resnet18 backbone"),
             # a detection run given where a classifier run is expected
             (["reproduce", "transfer", str(run), "--budget", "tiny", "--dry-run"], "the pretrained backbone comes from a "
                                                                                   "classifier run")]
    # a COCO file with a box outside its image
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "bad.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 40}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [30, 10, 40, 10], "area": 400, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}]}))
    cases.append((["train", "fasterrcnn_resnet18_fpn", "--data", f"coco:{tmp_path / 'bad.json'}", "--iterations", "1",
                   "--out", str(tmp_path / "x"), *SMALL], "a.png"))
    for args, words in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not (tmp_path / "x").exists()


def test_readme_detection_table_is_the_committed_transfer_experiment():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    runs = json.loads((root / "results" / "pennfudan-det" / "results.json").read_text())["runs"]
    readme = (root / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `") and "_resnet18_fpn` | " in line
            and ("random" in line or "CIFAR-10 classifier" in line)]
    assert len(rows) == len(runs) == 4
    fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        s = runs[f"{cells[0].strip('`')}-{'random' if cells[1] == 'random' else 'pretrained'}"]
        assert cells[2:8] == [fmt(s["box_ap"]), fmt(s["box_ap50"]), fmt(s["box_ap75"]), fmt(s["mask_ap"]),
                              fmt(s["mask_ap50"]), str(s["steps"])]
        assert cells[8] == f"{s['s_per_iteration']:.1f}"
