"""Compare training recipes on CIFAR-10 at one budget: the test error and wall time of each.

    python benchmarks/recipe_compare.py --data imagefolder:/work/shared/data/cifar10-jpg.tar.gz \
        --epochs 10 --runs short_cpu fast_cpu [--train-per-class 250 --val 1000] [--parallel]

A run is a recipe name, optionally with overrides: ``short_cpu+ema_decay=0.99+auto_augment=trivialaugment``.
``--train-per-class`` trains on a fixed class-stratified subset of the training split (seed 0) and
``--val`` keeps a random sample of N validation images, for budgets where the full set does not fit; the
test split is always the whole official one. Each run is an ordinary run directory under ``--out``;
the summary goes to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from reslab.config import resolve_config
from reslab.data import DatasetSplits, load_dataset
from reslab.train import fit


def _parse(run: str) -> tuple[str, dict]:
    recipe, *sets = run.split("+")
    return recipe, {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}


def _subset(splits: DatasetSplits, per_class: int | None, val: int | None) -> DatasetSplits:
    train, v = splits.train, splits.val
    if per_class:
        g = torch.Generator().manual_seed(0)
        idx = torch.cat([(train.labels == c).nonzero().flatten()[torch.randperm(int((train.labels == c).sum()), generator=g)[:per_class]]
                         for c in range(len(splits.classes))])
        train = train.subset(idx[torch.randperm(len(idx), generator=g)])
    if val is not None and v is not None:  # a random sample: the split is stored class by class
        v = v.subset(torch.randperm(len(v), generator=torch.Generator().manual_seed(1))[:val])
    return DatasetSplits(name=splits.name, classes=splits.classes, channels=splits.channels, image_size=splits.image_size,
                         train=train, val=v, test=splits.test, info=splits.info)


def run_one(args: argparse.Namespace, run: str) -> dict:
    recipe, sets = _parse(run)
    cfg = resolve_config(args.model, recipe=recipe, data=args.data, epochs=args.epochs, progress=False,
                         tensorboard=False, device="cpu", **sets)
    splits = _subset(load_dataset(cfg.data, val_size=cfg.val_size, seed=cfg.seed), args.train_per_class, args.val)
    t0 = time.time()
    res = fit(cfg, Path(args.out) / run.replace("+", "_").replace("=", "-"), data=splits, force=True)
    return {"run": run, "recipe": recipe, "overrides": sets, "epochs": args.epochs, "steps": res.steps,
            "train_images": len(splits.train), "val_images": len(splits.val) if splits.val is not None else 0,
            "test_images": len(splits.test), "best_val_err": res.best_val_err, "best_epoch": res.best_epoch,
            "test_err": res.test["top1_err"] if res.test else None, "wall_time_s": round(time.time() - t0, 1),
            "run_dir": str(res.run_dir), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="imagefolder:/work/shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--runs", nargs="+", default=["short_cpu", "fast_cpu"])
    p.add_argument("--train-per-class", type=int)
    p.add_argument("--val", type=int)
    p.add_argument("--out", default="/tmp/reg/compare")
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "fast_cpu.json"))
    p.add_argument("--parallel", action="store_true", help="one process per run (at the same time)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args, args.one)))
        return
    if args.parallel:
        base = [a for a in sys.argv[1:] if a != "--parallel"]
        procs = [subprocess.Popen([sys.executable, __file__, *base, "--one", r], stdout=subprocess.PIPE, text=True)
                 for r in args.runs]
        results = [json.loads(pr.communicate()[0].strip().splitlines()[-1]) for pr in procs]
    else:
        results = [run_one(args, r) for r in args.runs]
    summary = {"command": " ".join(["python", "benchmarks/recipe_compare.py", *sys.argv[1:]]), "model": args.model,
               "data": args.data, "epochs": args.epochs, "train_per_class": args.train_per_class, "val": args.val,
               "runs": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
