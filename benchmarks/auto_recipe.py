"""Recipe auto against the old defaults: `reslab train resnet20 --data imagefolder:DIR` with no flags.

    python benchmarks/assemble_folders.py /tmp/auto/folders
    git worktree add /tmp/auto/old b4494ec        # the code before recipe auto (issue 12)
    python benchmarks/auto_recipe.py run --old /tmp/auto/old/src --out /tmp/auto \\
        fashion300=/tmp/auto/folders/fashion300 pennfudan64=/tmp/auto/folders/pennfudan64 \\
        cifar10=path/to/cifar10-jpg.tar.gz
    python benchmarks/auto_recipe.py table /tmp/auto > benchmarks/results/auto_recipe.json

``run`` trains each folder twice, one thread each (OMP_NUM_THREADS=1), "before" with the old code
(PYTHONPATH) and "after" with this checkout, both with no flags but --out and --no-progress.
``table`` reads the run directories (metrics.jsonl, config.yaml) and prints JSON: test error, the
baselines (from the "after" run, which logs them), optimizer steps and wall time of each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def run(args: argparse.Namespace) -> None:
    for item in args.folders:
        name, _, src = item.partition("=")
        for which in ("before", "after"):
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            if which == "before":
                env["PYTHONPATH"] = args.old
            out = Path(args.out) / which / name
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "reslab", "train", "resnet20", "--data", f"imagefolder:{src}",
                            "--out", str(out), "--no-progress"], env=env, check=True)
            print(f"{which} {name}: {time.time() - t0:.0f} s", file=sys.stderr)


def _summary(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    start = next(r for r in records if r.get("event") == "start")
    test = next(r for r in records if r.get("event") == "test")
    end = next(r for r in reversed(records) if r.get("event") == "end")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    out = {"test_err": round(test["top1_err"], 2), "steps": end["step"], "wall_s": round(end["wall_time"], 1),
           "train_images": start["train"], "recipe": cfg.get("recipe"),
           "settings": {k: cfg.get(k) for k in ("batch_size", "epochs", "lr", "schedule", "augment", "pad", "normalize")}}
    if cfg.get("auto"):
        out["auto_reasons"] = cfg["auto"]
    if test.get("baselines"):
        out["baselines"] = {"majority_err": round(test["baselines"]["majority"]["test_err"], 2),
                            "linear_err": round(test["baselines"]["linear"]["test_err"], 2),
                            "linear_s": test["baselines"]["linear"]["seconds"]}
    return out


def table(args: argparse.Namespace) -> None:
    root = Path(args.root)
    result: dict = {"benchmark": "auto_recipe", "command": "reslab train resnet20 --data imagefolder:DIR (no flags)",
                    "threads": 1, "datasets": {}}
    for d in sorted((root / "after").iterdir()):
        row = {which: _summary(root / which / d.name) for which in ("before", "after")
               if (root / which / d.name / "metrics.jsonl").is_file()}
        result["datasets"][d.name] = row
    print(json.dumps(result, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(required=True)
    r = sub.add_parser("run")
    r.add_argument("--old", required=True, help="src/ of the code before recipe auto")
    r.add_argument("--out", required=True)
    r.add_argument("folders", nargs="+", help="NAME=PATH")
    r.set_defaults(fn=run)
    t = sub.add_parser("table")
    t.add_argument("root")
    t.set_defaults(fn=table)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
