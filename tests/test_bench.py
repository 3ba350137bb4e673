"""reslab bench: every path timed in one process, figures consistent with their definitions, a
run's top-1 error equal to 'reslab eval', agreement with eager, the CLI and its bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from reslab import bench as bench_mod
from reslab.bench import bench
from reslab.cli import main
from reslab.evaluate import evaluate_run
from reslab.models import create_model, model_info
from reslab.precision import CpuBf16

FIXTURE = Path(__file__).parent / "fixtures" / "run_v0"


@pytest.fixture()
def run(tmp_path):
    """The fixture run: resnet20 trained on the embedded Fashion-MNIST subset."""
    shutil.copytree(FIXTURE, tmp_path / "run")
    return tmp_path / "run"


def test_model_name_rows_follow_their_definitions():
    r = bench("resnet20", batches=(1, 4), paths=["eager", "eager-cl", "folded", "onnxruntime"], seconds=0.05,
              images=40, threads=1)
    assert r.baseline == "eager" and r.skipped == {}
    assert [(row.path, row.batch) for row in r.rows] == [
        (p, b) for b in (1, 4) for p in ("eager", "eager-cl", "folded", "onnxruntime")]
    macs = model_info(create_model("resnet20"), (3, 32, 32)).macs
    assert r.macs == macs and r.threads == 1 and r.input_size == (3, 32, 32)
    for row in r.rows:
        assert row.reps >= 3 and row.p95_ms >= row.p50_ms > 0
        assert row.images_per_s == pytest.approx(row.batch / (row.p50_ms / 1e3), rel=1e-9)
        assert row.gflops == pytest.approx(2 * macs * row.batch / (row.p50_ms / 1e3) / 1e9, rel=1e-9)
        assert row.peak_share == pytest.approx(row.gflops / r.fp32_peak_gflops, rel=1e-9)
        base = next(b for b in r.rows if b.batch == row.batch and b.path == "eager")
        assert row.speedup == pytest.approx(row.images_per_s / base.images_per_s, rel=1e-9)
    # fp32 paths compute the same function: top-1 agrees with eager on (almost) every random image;
    # a near-tie may flip under float reordering, so not all 40 are required
    assert r.accuracy["eager"]["agree"] == 100.0
    assert all(a["agree"] >= 95.0 and a["top1_err"] is None for a in r.accuracy.values())
    assert "19 batch norms folded" in r.notes["folded"]
    assert len(r.findings()) == 2 and "x eager" in r.findings()[0]


def test_torchvision_is_the_baseline_where_it_has_the_architecture():
    r = bench("resnet18", batches=(1,), paths=["torchvision", "eager"], seconds=0.05, images=2, threads=1)
    assert r.baseline == "torchvision"
    tv = next(row for row in r.rows if row.path == "torchvision")
    assert tv.speedup == 1.0
    assert "torchvision" not in r.accuracy  # its own random weights: nothing to compare


def test_a_run_is_measured_on_its_real_test_images(run):
    # (ONNX Runtime's parity on real images is tested with the export: tests/test_export.py)
    r = bench(run, batches=(8,), paths=["eager", "folded"], seconds=0.05, images=10_000, threads=1)
    ev = evaluate_run(run, split="test", protocol="center")
    assert r.accuracy_images == ev.result.n
    assert r.accuracy["eager"]["top1_err"] == pytest.approx(ev.result.top1_err, abs=1e-9)
    # a trained net's real images have clear margins: float reordering flips at most one of them
    assert r.accuracy["folded"]["agree"] >= 100.0 * (1 - 1 / ev.result.n) - 1e-9
    assert "test images" in r.accuracy_source


def test_bf16_path_only_where_the_cpu_has_native_bf16(monkeypatch):
    monkeypatch.setattr(bench_mod, "cpu_bf16", lambda: CpuBf16(False, "the CPU has neither AMX nor AVX512-BF16"))
    r = bench("resnet20", batches=(2,), paths=["eager", "folded-bf16"], seconds=0.02, images=8, threads=1)
    assert r.skipped == {"folded-bf16": "no native bf16: the CPU has neither AMX nor AVX512-BF16"}
    assert r.bf16_peak_gflops is None and [row.path for row in r.rows] == ["eager"]
    monkeypatch.setattr(bench_mod, "cpu_bf16", lambda: CpuBf16(True, "forced by the test"))
    r = bench("resnet20", batches=(2,), paths=["eager", "folded-bf16"], seconds=0.02, images=8, threads=1)
    assert [row.path for row in r.rows] == ["eager", "folded-bf16"] and r.bf16_peak_gflops > 0
    assert r.notes["folded-bf16"].endswith("bf16")


def test_int8_path_calibrates_on_the_runs_training_images(run):
    r = bench(run, batches=(4,), paths=["eager", "onnxruntime-int8"], seconds=0.02, images=300, threads=1)
    assert "onnxruntime-int8" not in r.notes  # calibrated on real training images, not the fallback
    # static int8 of a small net on real images: the bound is 0.5 points, measured on 1,000
    # CIFAR-10 images by benchmarks/inference.py; on these 300 allow 2 points (6 images)
    assert abs(r.accuracy["onnxruntime-int8"]["top1_err"] - r.accuracy["eager"]["top1_err"]) <= 2.0


def test_cli_prints_the_table_and_writes_json(run, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(run), "--batch", "1,2", "--paths", "eager,folded", "--seconds", "0.02",
                 "--images", "20", "--threads", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "path" in text and "folded" in text and "batch 2:" in text and f"wrote {out}" in text
    d = json.loads(out.read_text())
    assert {(row["path"], row["batch"]) for row in d["rows"]} == {(p, b) for p in ("eager", "folded") for b in (1, 2)}
    assert d["threads"] == 1 and d["torch"] == torch.__version__ and d["accuracy_images"] == 20


@pytest.mark.parametrize("argv, message", [
    (["resnet2"], "unknown model 'resnet2'"),
    (["resnet20", "--paths", "eager,fast"], "unknown path 'fast'"),
    (["resnet20", "--device", "cuda"], "--device cuda is not supported"),
    (["resnet20", "--threads", "0"], "--threads must be at least 1"),
    (["resnet20", "--batch", "0"], "--batch must be positive"),
    (["resnet20", "--paths", "folded"], "the baseline path eager is not among --paths"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["bench", *argv, "--seconds", "0.01", "--images", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_json_path_that_is_a_directory_is_refused_before_any_work(tmp_path, capsys):
    assert main(["bench", "resnet20", "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
