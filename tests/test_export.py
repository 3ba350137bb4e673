"""reslab export and the runtimes, on a trained run and real Fashion-MNIST test images.

The references are computed here: the run's eager PyTorch model on the run's own test images
(preprocessed by its normaliser), ONNX Runtime and OpenVINO called directly, PIL and numpy for an
image file preprocessed from the sidecar alone. Float32 results of different kernels differ by
reordering only: on a trained net's logits about 1e-7 of their scale, bounded here at 1e-4.
"""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
import yaml
from filelock import FileLock
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.evaluate import evaluate_run
from reslab.export import PARITY_RTOL, export_run
from reslab.models import create_model, get_model_entry, list_models
from reslab.predict import load_run, predict, run_split
from reslab.runtimes import RUNTIMES, export_onnx, load_runtime, quantize_onnx_int8, read_onnx_metadata

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"
CLASSES = json.loads((FIXTURE / "classes.json").read_text())
RTOL = 1e-4  # of the largest eager logit: float32 reordering gives ~1e-7 on this net


def _bn_from_batch(model, x):
    """BatchNorm running statistics measured on ``x`` (as after training), so that the eval-mode net
    is as well conditioned as a trained one."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()  # the rest in eval mode: no auxiliary heads (Inception's take no 96x96 input), no dropout
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches seen
            m.train()
        model(x)
        for m in bns:
            m.momentum = 0.1
    return model.eval()


def _train(run, embedded):
    loaded = load_run(run)
    model, norm = loaded.model.train(), loaded.normalizer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a busy 2-core CPU: two threads wait on each other
    try:
        torch.manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = embedded.train.images, embedded.train.labels
        for _ in range(30):
            idx = torch.randint(0, len(x), (32,))
            loss = F.cross_entropy(model(norm(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        _bn_from_batch(model, norm(x[:256]))
    finally:
        torch.set_num_threads(threads)
    best = run / "checkpoints" / "best.safetensors"
    with safe_open(str(best), framework="pt") as f:
        meta = dict(f.metadata() or {})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(best), metadata=meta)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, embedded):
    """The fixture run (resnet20, Fashion-MNIST 28x28) with 'best' weights trained for 30 steps on the
    embedded training images (over 40% test accuracy: predictions worth comparing). Trained once per
    test session (xdist workers share it under a lock), copied for each module."""
    shared = tmp_path_factory.getbasetemp().parent / "export-trained-run"
    with FileLock(str(shared) + ".lock"):
        if not shared.is_dir():
            work = shared.with_name(shared.name + ".partial")
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(FIXTURE, work)
            _train(work, embedded)
            work.rename(shared)
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(shared, run)
    return run


@pytest.fixture(scope="module")
def test_batch(run_dir, embedded):
    """(float inputs, labels, eager logits) for 300 test images spread over the test split."""
    run = load_run(run_dir)
    idx = torch.linspace(0, len(embedded.test) - 1, 300).long()
    x = run.normalizer(embedded.test.images[idx])
    with torch.no_grad():
        logits = run.model(x)
    return x, embedded.test.labels[idx], logits


@pytest.fixture(scope="module")
def onnx_export(run_dir, tmp_path_factory):
    """``export_run`` of the trained run to ONNX, once per test session (the file is only read)."""
    shared = tmp_path_factory.getbasetemp().parent / "export-onnx"
    with FileLock(str(shared) + ".lock"):
        if not (shared / "result.pkl").is_file():
            result = export_run(run_dir, format="onnx", out=shared / "model.onnx")
            (shared / "result.pkl").write_bytes(pickle.dumps(result))
    return pickle.loads((shared / "result.pkl").read_bytes())


def _close(got, want, rtol=RTOL):
    scale = float(want.abs().max())
    diff = float((got - want).abs().max())
    assert diff <= rtol * scale, f"max |diff| {diff:.3g} over {rtol:g} x max |logit| {scale:.3g}"


def _ties(logits, rtol=RTOL):
    """Images whose two best eager logits are closer than float reordering can move them: their top-1
    may go either way in another runtime (the trained net has one at a 1e-7 margin)."""
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 0] - top2[:, 1]) <= 2 * rtol * float(logits.abs().max())


def _same_top1(got, eager):
    clear = ~_ties(eager)
    assert torch.equal(got.argmax(1)[clear], eager.argmax(1)[clear]) and clear.float().mean() > 0.97


def test_the_trained_run_predicts_better_than_chance(test_batch):
    x, y, logits = test_batch
    assert float((logits.argmax(1) == y).float().mean()) > 0.35


# -- ONNX: the file, its runtimes, its metadata --------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_onnx_file_gives_the_eager_logits_in_each_runtime_at_any_batch_size(onnx_export, test_batch, runtime):
    x, _, eager = test_batch
    module = load_runtime(runtime, onnx_export.path, threads=1)
    got = torch.cat([module(x[:1]), module(x[1:8]), module(x[8:])])  # the batch axis is dynamic
    assert got.dtype == torch.float32 and got.shape == eager.shape
    _close(got, eager)
    _same_top1(got, eager)


def test_export_reports_its_parity_check_on_the_runs_test_images(onnx_export):
    r = onnx_export
    p = r.parity
    assert (r.format, r.opset, r.checkpoint, p.runner) == ("onnx", 20, "best", "onnxruntime")
    assert p.images == 100 and p.source == "test images of embedded"
    assert 0 < p.max_abs_diff <= RTOL * p.logit_scale and p.bound == pytest.approx(PARITY_RTOL * p.logit_scale)
    assert p.top1_agree >= 99 and abs(p.eager_acc - p.exported_acc) <= 1 and p.eager_acc > 35  # 1 image: a near-tie
    assert onnx.load(str(r.path)).opset_import[0].version == 20
    text = r.summary()
    assert f"wrote {r.path}" in text and "parity on 100 test images of embedded" in text
    assert f"top-1 agrees on {p.top1_agree}/100" in text and f"max |logit diff| {p.max_abs_diff:.2e}" in text


def test_onnx_metadata_and_sidecar_hold_the_preprocessing(onnx_export, run_dir):
    meta = read_onnx_metadata(onnx_export.path)
    with safe_open(str(run_dir / "preprocess.safetensors"), framework="pt") as f:
        mean, std = f.get_tensor("mean"), f.get_tensor("std")
    assert json.loads(meta["classes"]) == CLASSES and meta["normalize"] == "per_pixel_mean"
    assert torch.equal(torch.tensor(json.loads(meta["mean"])), mean) and torch.equal(torch.tensor(json.loads(meta["std"])), std)
    assert json.loads(meta["input_size"]) == [1, 28, 28] and meta["model"] == "resnet20"
    side = json.loads(onnx_export.sidecar.read_text())
    assert onnx_export.sidecar == onnx_export.path.with_name("model.onnx.json")
    assert side["classes"] == CLASSES and side["file"] == "model.onnx" and side["format"] == "onnx"
    assert side["input"] == {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32", "layout": "NCHW"}
    pre = side["preprocess"]
    assert (pre["mode"], pre["resize_shorter_side"], pre["center_crop"]) == ("L", 28, [28, 28])
    assert torch.equal(torch.tensor(pre["mean"]), mean) and side["parity"]["images"] == 100
    assert json.loads(meta["reslab"]) == {k: v for k, v in side.items() if k in json.loads(meta["reslab"])}


def test_an_image_file_needs_only_the_onnx_file_and_its_sidecar(onnx_export, run_dir, embedded, tmp_path):
    """A user with onnxruntime, PIL and numpy (no reslab, no torch) gets reslab predict's probabilities."""
    import onnxruntime as ort

    side = json.loads(onnx_export.sidecar.read_text())
    pre = side["preprocess"]
    paths = []
    for i in (0, 1, 2):  # a real test image, enlarged to 40x35: resized and cropped on the way in
        path = tmp_path / f"{i}.png"
        Image.fromarray(embedded.test.images[i * 97, 0].numpy()).resize((35, 40), Image.BILINEAR).save(path)
        paths.append(path)
    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    want = predict(load_run(run_dir), paths, topk=3)
    for path, pred in zip(paths, want):
        img = Image.open(path).convert(pre["mode"])
        r = pre["resize_shorter_side"] / min(img.size)
        img = img.resize((round(img.size[0] * r), round(img.size[1] * r)), Image.BILINEAR)
        (h, w), (W, H) = pre["center_crop"], img.size
        left, top = (W - w) // 2, (H - h) // 2
        pixels = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32)[None] / 255
        x = ((pixels - np.array(pre["mean"], np.float32)) / np.array(pre["std"], np.float32))[None]
        logits = session.run(None, {side["input"]["name"]: x.astype(np.float32)})[0][0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        top = np.argsort(-probs)[:3]
        assert [side["classes"][i] for i in top] == [c for c, _ in pred.top]
        np.testing.assert_allclose(probs[top], [p for _, p in pred.top], atol=1e-5)


# -- TorchScript and torch.export ----------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torchscript_and_exported_program_round_trip_with_their_metadata(run_dir, test_batch, tmp_path, fmt):
    out = tmp_path / ("model.pt" if fmt == "torchscript" else "model.pt2")
    r = export_run(run_dir, format=fmt, out=out, check_images=20)
    extra = {"reslab.json": ""}
    if fmt == "torchscript":
        module = torch.jit.load(str(out), _extra_files=extra)
    else:
        module = torch.export.load(str(out), extra_files=extra).module()
    x, _, eager = test_batch
    with torch.no_grad():
        got = torch.cat([module(x[:1]), module(x[1:])])
    _close(got, eager, 1e-5)  # the same kernels as eager
    meta = json.loads(extra["reslab.json"])
    assert meta["classes"] == CLASSES and meta["preprocess"]["normalize"] == "per_pixel_mean"
    assert r.opset is None and r.parity.images == 20 and r.parity.max_abs_diff <= 1e-5 * r.parity.logit_scale
    assert json.loads(r.sidecar.read_text())["format"] == fmt


# -- int8 -----------------------------------------------------------------------------------------------------------------
def _ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_is_never_on_by_default_and_stays_within_3_points_of_float_accuracy_in_each_runtime(onnx_export, run_dir, embedded,
                                                                                 test_batch, tmp_path):
    assert "QuantizeLinear" not in _ops(onnx_export.path)
    run = load_run(run_dir)
    calib = run.normalizer(embedded.train.images[:256])  # training images, never the test images measured
    q = quantize_onnx_int8(onnx_export.path, tmp_path / "int8.onnx", calib)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(q) and q.stat().st_size < onnx_export.path.stat().st_size / 2
    assert json.loads(read_onnx_metadata(q)["classes"]) == CLASSES
    x, y, eager = test_batch
    acc = lambda z: 100 * float((z.argmax(1) == y).float().mean())  # noqa: E731
    for runtime in RUNTIMES:
        int8 = load_runtime(runtime, q)(x)
        # 300 images: one image is 0.33 points; int8 moves a few near-tied predictions either way
        assert abs(acc(int8) - acc(eager)) <= 3.0, runtime
        assert float((int8.argmax(1) == eager.argmax(1)).float().mean()) >= 0.9, runtime


# -- the command line -----------------------------------------------------------------------------------------------------
def _top1(text):
    line = [l for l in text.splitlines() if "top-1 error" in l][-1]
    return line.split("top-1 error ")[1].split("%")[0]


def test_cli_export_int8_prints_what_it_wrote_and_the_accuracy_change(run_dir, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out), "--int8", "--check-images", "50"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "int8" in text and "parity on 50 test images of embedded" in text
    assert "int8 (calibrated on 256 training images): top-1 agrees with eager on" in text and "points" in text
    assert "QuantizeLinear" in _ops(out) and json.loads((tmp_path / "q.onnx.json").read_text())["int8"]["images"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.json"]


def test_cli_eval_and_predict_with_a_runtime_give_the_eager_results(run_dir, embedded, tmp_path, capsys):
    """Against the eager model in float32 through the API (the CLI's eager default may be bf16)."""
    run = load_run(run_dir)
    _, val = run_split(run, "val")  # the run's own validation split (val_size 100)
    with torch.no_grad():
        ties = int(_ties(run.model(run.normalizer(val.images))).sum())  # may flip either way
    eager_err = evaluate_run(run_dir, split="val").result.top1_err
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(embedded.test.images[i * 131, 0].numpy()).save(paths[-1])
    eager_pred = predict(run, paths, 3)
    before = sorted(p.name for p in run_dir.rglob("*"))
    assert main(["eval", str(run_dir), "--split", "val", "--runtime", "openvino"]) == 0
    ov_eval = capsys.readouterr().out
    assert "openvino" in ov_eval and "eval-val-center-openvino.json" in ov_eval
    assert abs(float(_top1(ov_eval)) - eager_err) <= 100 * ties / len(val) + 0.005  # printed to 2 decimals
    assert main(["predict", str(run_dir), *map(str, paths), "--topk", "3", "--runtime", "onnxruntime"]) == 0
    rows = [l.split("%") for l in capsys.readouterr().out.splitlines() if "%" in l]
    want = [(c, p) for pred in eager_pred for c, p in pred.top]
    assert [r[1].strip() for r in rows] == [c for c, _ in want]  # the same classes in the same order
    assert [float(r[0]) for r in rows] == pytest.approx([100 * p for _, p in want], abs=0.006)  # printed to 2 decimals
    after = sorted(p.name for p in run_dir.rglob("*"))
    assert set(after) - set(before) == {"eval-val-center-openvino.json", "confusion-val-center-openvino.png"}


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------------------------
@pytest.fixture()
def bad_runs(run_dir, tmp_path):
    no_ckpt = tmp_path / "no-ckpt"
    shutil.copytree(FIXTURE, no_ckpt)
    for p in (no_ckpt / "checkpoints").glob("*.safetensors"):
        p.unlink()
    seg = tmp_path / "seg"
    shutil.copytree(FIXTURE, seg)
    cfg = yaml.safe_load((seg / "config.yaml").read_text())
    cfg["model"] = "unet"
    (seg / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "plain").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "img.png")
    return {"RUN": str(run_dir), "NOCKPT": str(no_ckpt), "SEG": str(seg), "PLAIN": str(tmp_path / "plain"),
            "IMG": str(tmp_path / "img.png"), "OUT": str(tmp_path / "out" / "m.onnx"), "DIR": str(tmp_path / "plain")}


@pytest.mark.parametrize("argv,needle", [
    (["export", "NOCKPT", "--out", "OUT"], "no 'last' checkpoint yet"),
    (["export", "NOCKPT", "--out", "OUT", "--checkpoint", "last"], "no 'last' checkpoint yet"),
    (["export", "PLAIN", "--out", "OUT"], "is not a run directory"),
    (["export", "RUN", "--out", "OUT", "--format", "tflite"], "unsupported format 'tflite'; choose one of onnx, torchscript, exported-program"),
    (["export", "RUN", "--out", "OUT", "--format", "torchscript", "--int8"], "--int8 quantises ONNX files"),
    (["export", "RUN", "--out", "DIR"], "is a folder"),
    (["export", "SEG", "--out", "OUT"], "segmentation run"),
    (["export", "RUN", "--out", "OUT", "--check-images", "0"], "at least 1"),
    (["eval", "SEG", "--runtime", "onnxruntime"], "segmentation run"),
    (["predict", "SEG", "IMG", "--runtime", "openvino"], "segmentation run"),
    (["predict", "RUN", "IMG", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'; choose one of torch, onnxruntime, openvino"),
    (["eval", "RUN", "--runtime", "onnxruntime", "--protocol", "multiscale"], "multiscale"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_runs, capsys, argv, needle):
    argv = [bad_runs.get(a, a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not Path(bad_runs["OUT"]).parent.exists()


@pytest.mark.parametrize("missing,argv", [
    ("onnxruntime", ["predict", "RUN", "IMG", "--runtime", "onnxruntime"]),
    ("openvino", ["eval", "RUN", "--runtime", "openvino"]),
    ("onnxscript", ["export", "RUN", "--out", "OUT"]),
    ("onnxruntime", ["export", "RUN", "--out", "OUT"]),
])
def test_a_runtime_that_is_not_installed_names_the_pip_command(bad_runs, capsys, monkeypatch, missing, argv):
    monkeypatch.setitem(sys.modules, missing, None)  # import raises ImportError, as when not installed
    assert main([bad_runs.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"reslab: error: {missing} is not installed; install the export extras: pip install 'reslab[export]'"
    assert not Path(bad_runs["OUT"]).parent.exists()


def test_a_parity_failure_writes_nothing(run_dir, tmp_path, monkeypatch):
    import reslab.export

    real = reslab.export.read_exported

    def off(path, fmt):  # a file computing something else: logits shifted by 1% of their scale
        module, meta = real(path, fmt)
        return (lambda x: module(x) + 0.01 * module(x).abs().max()), meta

    monkeypatch.setattr(reslab.export, "read_exported", off)
    with pytest.raises(ReslabError, match=r"parity check failed: .* over the bound .* nothing was written"):
        export_run(run_dir, format="exported-program", out=tmp_path / "m.pt2", check_images=10)
    assert list(tmp_path.iterdir()) == []


def test_without_the_runs_data_random_images_stand_in_and_int8_is_refused(run_dir, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    cfg = yaml.safe_load((moved / "config.yaml").read_text())
    cfg["data"] = f"imagefolder:{tmp_path / 'gone'}"
    (moved / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ReslabError, match=r"--int8 calibrates on the run's training images .* give --data-dir"):
        export_run(moved, format="onnx", out=tmp_path / "out" / "q.onnx", int8=True)
    r = export_run(moved, format="exported-program", out=tmp_path / "out" / "m.pt2", check_images=8)
    p = r.parity
    assert p.source.startswith("random images (the run's data is not available here: ") and "gone" in p.source
    assert p.images == 8 and p.eager_acc is None and p.max_abs_diff <= 1e-5 * p.logit_scale
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == ["m.pt2", "m.pt2.json"]


# -- every registered classifier -------------------------------------------------------------------------------------------
CLASSIFIERS = [n for n in list_models() if get_model_entry(n).task == "classify"]
# The dynamo exporter traces a model in 1-25 s on this 2-core CPU (ResNet-1202: 85 s); the whole registry takes
# 12 minutes idle, 28 on the busy machine (all 62 passed), too long for the suite. The suite exports one member of each kind of network module here (AlexNet
# is the one the TorchScript-based exporter cannot export); RESLAB_EXPORT_ALL=1 exports all of them.
REPRESENTATIVES = ["alexnet", "googlenet", "lenet5", "preact_resnet18", "se_resnet20"]
ALL = os.environ.get("RESLAB_EXPORT_ALL") == "1"


@pytest.mark.parametrize("name", CLASSIFIERS if ALL else REPRESENTATIVES)
def test_registered_classifier_exports_to_onnx_with_eager_logits(name, tmp_path):
    c, h, w = get_model_entry(name).input_size
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(4, c, min(h, 96), min(w, 96))  # 96: the smallest side every ImageNet-size net takes
    _bn_from_batch(model, x)
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_shape=(2, c, min(h, 96), min(w, 96)))
    got = load_runtime("onnxruntime", path, threads=1)(x[:3]).double()
    with torch.no_grad():
        eager = model(x[:3]).double()
        exact = model.double()(x[:3].double())
    # ONNX Runtime is no further from the float64 answer than a few times eager float32's own rounding error
    eager_err, ort_err = float((eager - exact).abs().max()), float((got - exact).abs().max())
    assert ort_err <= 5 * eager_err + 1e-5 * float(exact.abs().max()), (ort_err, eager_err)
