"""Training throughput with 1 process vs N processes (torchrun, gloo on the CPU), same global batch.

Each configuration trains resnet20 through `reslab train` for a fixed number of iterations on the
embedded data; images/s is read from the run's epoch record (global images over the epoch's time).
With 2 processes each gets ``threads // 2`` intra-op threads, so the comparison uses the same cores.

    python benchmarks/ddp_throughput.py [--model resnet20] [--iterations 60] [--nproc 2] [--repeats 2]

Writes benchmarks/results/ddp_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model: str, nproc: int, iterations: int, batch: int, threads: int, out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc))}
    args = ["train", model, "--data", "embedded", "--iterations", str(iterations), "--batch-size", str(batch),
            "--set", "val_size=0", "--no-progress", "--set", "tensorboard=false", "--out", str(out)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, "-m", "reslab", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"event": "epoch"' in line]
    return float(epochs[-1]["images_per_s"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ddp_throughput.json"))
    args = p.parse_args(argv)
    one, many = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):  # interleaved
            one.append(run(args.model, 1, args.iterations, args.batch_size, args.threads, Path(tmp) / f"one{r}"))
            many.append(run(args.model, args.nproc, args.iterations, args.batch_size, args.threads, Path(tmp) / f"many{r}"))
            print(f"repeat {r + 1}: 1 process {one[-1]:.1f} img/s, {args.nproc} processes {many[-1]:.1f} img/s", file=sys.stderr)
    a, b = statistics.median(one), statistics.median(many)
    report = {"benchmark": "ddp_throughput", "model": args.model, "data": "embedded (28x28)",
              "global_batch": args.batch_size, "iterations": args.iterations, "cores": os.cpu_count(),
              "threads_total": args.threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "one_process_images_per_s": a, f"{args.nproc}_processes_images_per_s": b, "speedup": round(b / a, 4),
              "runs": {"one": one, "many": many}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"1 process {a:.1f} img/s, {args.nproc} processes {b:.1f} img/s (x{b / a:.2f}); wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
