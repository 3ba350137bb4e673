"""CPU inference: every path of ``reslab bench`` on the issue's cases, in one process, with targets.

Cases (issue 17):
- ResNet-50, batch 16: the best reslab path at least 1.5x torchvision's eager NCHW model (images/s);
  batch 1: p50 latency at least 1.3x better.
- ResNet-18, batches 1 and 16: reported beside it.
- CIFAR ResNet-56, batch 256: the best path at least 2x reslab eager.
- A trained CIFAR-10 run (``--run``): every path's top-1 error on 1,000 real test images equal to
  eager's (int8: within 0.5 points), at batch 256.

    python benchmarks/inference.py --run runs/r20-cifar10 [--threads 2] [--seconds 3] [--compile]
    python benchmarks/inference.py --retarget     # recompute the targets of the saved report

Writes benchmarks/results/inference.json (each case's full ``reslab bench`` report and the targets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from reslab.bench import DEFAULT_PATHS, bench
from reslab.io import atomic_write_text

FP32_PATHS = ("torchvision", "eager", "eager-cl", "folded", "onnxruntime", "openvino", "compile")
"""Paths that compute in float32: their top-1 must equal eager's. bf16 and int8 paths round every
product (8 and 7 significant bits), so a test image whose two best logits lie within that rounding
may flip: they are bounded at 0.5 points (1,000 images: 5 flips)."""


def _rows(case: dict, batch: int, fp32_only: bool = False) -> list[dict]:
    return [r for r in case["rows"] if r["batch"] == batch and r["path"] != "torchvision"
            and (not fp32_only or r["path"] in FP32_PATHS)]


def _without_paths(case: dict) -> dict:
    """No machine paths in committed results: the run and its data named by their last component."""
    case["target"] = Path(case["target"]).name
    source = case.get("accuracy_source") or ""
    if ":" in source and "/" in source:
        head, _, tail = source.rpartition(":")
        case["accuracy_source"] = f"{head}:{Path(tail).name}"
    return case


def targets_for(cases: dict[str, dict]) -> dict[str, dict]:
    """The issue's targets from the measured cases (``BenchReport.to_dict()`` of each): for each
    speed target the best of all paths and the best float32 path (what a CPU without native bf16
    or int8 kernels gets), and the accuracy of every path against eager."""
    targets: dict[str, dict] = {}
    r50 = cases["resnet50"]
    tv = {r["batch"]: r for r in r50["rows"] if r["path"] == "torchvision"}
    for suffix, fp32_only in (("", False), ("_fp32", True)):
        best16 = max(_rows(r50, 16, fp32_only), key=lambda r: r["images_per_s"])
        targets[f"resnet50_batch16_throughput{suffix}"] = {
            "best_path": best16["path"], "ratio": round(best16["images_per_s"] / tv[16]["images_per_s"], 3),
            "target": 1.5}
        best1 = min(_rows(r50, 1, fp32_only), key=lambda r: r["p50_ms"])
        targets[f"resnet50_batch1_latency{suffix}"] = {
            "best_path": best1["path"], "ratio": round(tv[1]["p50_ms"] / best1["p50_ms"], 3), "target": 1.3}
        best = max(_rows(cases["resnet56"], 256, fp32_only), key=lambda r: r["images_per_s"])
        targets[f"resnet56_batch256_throughput{suffix}"] = {
            "best_path": best["path"], "ratio": round(best["speedup"], 3), "target": 2.0}
    if "trained_run" in cases:
        accuracy = cases["trained_run"]["accuracy"]
        eager = accuracy["eager"]["top1_err"]
        targets["accuracy_equal_to_eager"] = {
            path: {"top1_err": a["top1_err"], "agree": a["agree"],
                   "diff_points": None if eager is None or a["top1_err"] is None else round(a["top1_err"] - eager, 3),
                   "bound_points": 0.0 if path in FP32_PATHS else 0.5}
            for path, a in accuracy.items()}
        for t in targets["accuracy_equal_to_eager"].values():
            t["meets_target"] = t["diff_points"] is not None and abs(t["diff_points"]) <= t["bound_points"]
    for t in targets.values():
        if "ratio" in t:
            t["meets_target"] = t["ratio"] >= t["target"]
    return targets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a run directory trained on CIFAR-10 (for the accuracy case)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    p.add_argument("--retarget", action="store_true",
                   help="time nothing: recompute the targets of the report in --out from its measured cases")
    args = p.parse_args(argv)
    if args.retarget:
        saved = json.loads(Path(args.out).read_text())
        if "trained_run" in saved["cases"]:
            _without_paths(saved["cases"]["trained_run"])
        saved["targets"] = targets_for(saved["cases"])
        atomic_write_text(Path(args.out), json.dumps(saved, indent=2))
        for name, t in saved["targets"].items():
            print(f"{name}: {json.dumps(t)}")
        return 0
    paths = [*DEFAULT_PATHS, *(["compile"] if args.compile else [])]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    cases: dict[str, dict] = {}
    started = time.time()

    r50 = bench("resnet50", batches=(1, 16), paths=paths, threads=args.threads, seconds=args.seconds, images=32, log=log)
    cases["resnet50"] = r50.to_dict()

    r18 = bench("resnet18", batches=(1, 16), paths=paths, threads=args.threads, seconds=args.seconds, images=32, log=log)
    cases["resnet18"] = r18.to_dict()

    r56 = bench("resnet56", batches=(256,), paths=[p for p in paths if p != "torchvision"], threads=args.threads,
                seconds=args.seconds, images=256, log=log)
    cases["resnet56"] = r56.to_dict()

    if args.run:
        run = bench(args.run, batches=(256,), paths=[p for p in paths if p != "torchvision"], threads=args.threads,
                    seconds=args.seconds, images=args.images, log=log)
        cases["trained_run"] = _without_paths(run.to_dict())
    targets = targets_for(cases)
    for name, t in targets.items():
        print(f"{name}: {json.dumps(t)}")

    report = {"benchmark": "inference", "threads": r50.threads, "cpu": r50.cpu, "torch": torch.__version__,
              "bf16": r50.bf16_reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "wall_s": round(time.time() - started, 1), "targets": targets, "cases": cases}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
