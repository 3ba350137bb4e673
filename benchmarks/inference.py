"""CPU inference: every path of ``reslab bench`` on the issue's cases, in one process, with targets.

Cases (issue 17):
- ResNet-50, batch 16: the best reslab path at least 1.5x torchvision's eager NCHW model (images/s);
  batch 1: p50 latency at least 1.3x better.
- ResNet-18, batches 1 and 16: reported beside it.
- CIFAR ResNet-56, batch 256: the best path at least 2x reslab eager.
- A trained CIFAR-10 run (``--run``): every path's top-1 error on 1,000 real test images equal to
  eager's (int8: within 0.5 points), at batch 256.

    python benchmarks/inference.py --run runs/r20-cifar10 [--threads 2] [--seconds 3] [--compile]

Writes benchmarks/results/inference.json (each case's full ``reslab bench`` report and the targets).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from reslab.bench import DEFAULT_PATHS, BenchReport, bench
from reslab.io import atomic_write_text


def _row(report: BenchReport, path: str, batch: int):
    return next(r for r in report.rows if r.path == path and r.batch == batch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a run directory trained on CIFAR-10 (for the accuracy case)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compiling)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference.json"))
    args = p.parse_args(argv)
    paths = [*DEFAULT_PATHS, *(["compile"] if args.compile else [])]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    cases: dict[str, dict] = {}
    targets: dict[str, dict] = {}
    started = time.time()

    r50 = bench("resnet50", batches=(1, 16), paths=paths, threads=args.threads, seconds=args.seconds, images=32, log=log)
    cases["resnet50"] = r50.to_dict()
    best16 = r50.best(16)
    tv16, tv1 = _row(r50, "torchvision", 16), _row(r50, "torchvision", 1)
    targets["resnet50_batch16_throughput"] = {
        "best_path": best16.path, "ratio": round(best16.images_per_s / tv16.images_per_s, 3), "target": 1.5}
    targets["resnet50_batch1_latency"] = {
        "best_path": min((r for r in r50.rows if r.batch == 1 and r.path != "torchvision"), key=lambda r: r.p50_ms).path,
        "ratio": round(tv1.p50_ms / min(r.p50_ms for r in r50.rows if r.batch == 1 and r.path != "torchvision"), 3),
        "target": 1.3}

    r18 = bench("resnet18", batches=(1, 16), paths=paths, threads=args.threads, seconds=args.seconds, images=32, log=log)
    cases["resnet18"] = r18.to_dict()

    r56 = bench("resnet56", batches=(256,), paths=[p for p in paths if p != "torchvision"], threads=args.threads,
                seconds=args.seconds, images=256, log=log)
    cases["resnet56"] = r56.to_dict()
    best = r56.best(256)
    targets["resnet56_batch256_throughput"] = {"best_path": best.path, "ratio": round(best.speedup, 3), "target": 2.0}

    if args.run:
        run = bench(args.run, batches=(256,), paths=[p for p in paths if p != "torchvision"], threads=args.threads,
                    seconds=args.seconds, images=args.images, log=log)
        d = run.to_dict()
        d["target"] = Path(args.run).name  # no machine paths in committed results
        cases["trained_run"] = d
        eager = run.accuracy["eager"]["top1_err"]
        targets["accuracy_equal_to_eager"] = {
            path: {"top1_err": a["top1_err"], "agree": a["agree"],
                   "diff_points": None if eager is None or a["top1_err"] is None else round(a["top1_err"] - eager, 3),
                   "bound_points": 0.5 if path == "onnxruntime-int8" else 0.0}
            for path, a in run.accuracy.items()}
        for t in targets["accuracy_equal_to_eager"].values():
            t["meets_target"] = t["diff_points"] is not None and abs(t["diff_points"]) <= t["bound_points"]
    for name, t in targets.items():
        if "ratio" in t:
            t["meets_target"] = t["ratio"] >= t["target"]
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
