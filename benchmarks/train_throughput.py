"""Training throughput of reslab's fit() against a bare eager PyTorch loop, same model, same process.

fit() pays for the data pipeline (per-epoch shuffling, uint8 -> float, per-pixel mean, batched
pad-crop-flip), metrics logging and per-epoch checkpoints; the bare loop trains on pre-normalised
float batches already in memory with no augmentation and no logging. The target: fit >= 0.95x.

Precision (issue 17): fit runs in fp32 and with ``amp auto`` (bf16 autocast on CPUs with native
bf16, fp32 elsewhere); the bare loop in fp32 and, where the CPU has native bf16, under bf16
autocast too. Target: fit with auto >= 1.5x the fp32 bare loop where auto picks bf16, and >= 0.95x
(never slower than fp32) where it picks fp32.

    python benchmarks/train_throughput.py [--models resnet20,resnet56] [--steps 60] [--repeats 3]

Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import reslab
from reslab.config import make_config
from reslab.data import DatasetSplits, TensorImages
from reslab.precision import resolve_precision
from reslab.train.loop import fit


def cifar_sized(n: int, seed: int = 0) -> DatasetSplits:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    empty = TensorImages(images[:0], labels[:0])
    return DatasetSplits(name="cifar-sized", classes=[str(i) for i in range(10)], channels=3, image_size=(32, 32),
                         train=TensorImages(images, labels), val=empty, test=None, info={})


def bare_loop(model_name: str, data: DatasetSplits, batch: int, steps: int, warmup: int,
              amp_dtype: torch.dtype | None = None) -> float:
    """images/s of forward + backward + SGD step on pre-made float batches (timed after warm-up),
    under CPU autocast to ``amp_dtype`` when given."""
    torch.manual_seed(0)
    model = reslab.create_model(model_name, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x_all = data.train.images.float().div(255).sub(0.5)
    y_all = data.train.labels
    nb = len(y_all) // batch
    batches = [(x_all[i * batch:(i + 1) * batch], y_all[i * batch:(i + 1) * batch]) for i in range(nb)]
    model.train()
    t0 = None
    for s in range(warmup + steps):
        if s == warmup:
            t0 = time.perf_counter()
        x, y = batches[s % nb]
        with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def fit_loop(model_name: str, data: DatasetSplits, batch: int, steps: int, warmup: int, workdir: Path,
             amp: str = "fp32") -> float:
    """images/s of reslab.fit over the same number of steps, timed between two step callbacks, so
    per-epoch work (shuffles, checkpoints, metrics) inside the window is counted."""
    stamps: dict[int, float] = {}

    def on_step(step, _model):
        if step in (warmup, warmup + steps):
            stamps[step] = time.perf_counter()

    cfg = make_config(recipe="paper_cifar10", model=model_name, data="cifar-sized", iterations=warmup + steps,
                      batch_size=batch, progress=False, tensorboard=False, val_size=0, device="cpu", amp=amp)
    out = Path(tempfile.mkdtemp(dir=workdir))
    fit(cfg, out / "run", data=data, on_step=on_step)
    return steps * batch / (stamps[warmup + steps] - stamps[warmup])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=2560, help="training images (epochs of 20 steps at batch 128)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = p.parse_args(argv)

    data = cifar_sized(args.images)
    auto = resolve_precision("auto", torch.device("cpu"))
    print(f"amp auto here: {auto.reason}", file=sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            runs: dict[str, list[float]] = {"bare": [], "fit": [], "fit_auto": []}
            if auto.dtype is not None:
                runs["bare_bf16"] = []
            for r in range(args.repeats):  # interleaved, so drift in machine load hits all alike
                runs["bare"].append(bare_loop(name, data, args.batch_size, args.steps, args.warmup))
                runs["fit"].append(fit_loop(name, data, args.batch_size, args.steps, args.warmup, Path(tmp)))
                runs["fit_auto"].append(fit_loop(name, data, args.batch_size, args.steps, args.warmup, Path(tmp),
                                                 amp="auto"))
                if "bare_bf16" in runs:
                    runs["bare_bf16"].append(bare_loop(name, data, args.batch_size, args.steps, args.warmup,
                                                       torch.bfloat16))
                print(f"{name} repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()) + " img/s",
                      file=sys.stderr)
            med = {k: statistics.median(v) for k, v in runs.items()}
            b, f, fa = med["bare"], med["fit"], med["fit_auto"]
            auto_target = 1.5 if auto.dtype is not None else 0.95
            results[name] = {"bare_images_per_s": round(b, 2), "fit_images_per_s": round(f, 2),
                             "ratio": round(f / b, 4), "target": 0.95, "meets_target": f / b >= 0.95,
                             "fit_auto_images_per_s": round(fa, 2), "auto_precision": auto.name,
                             "auto_ratio_to_bare_fp32": round(fa / b, 4), "auto_target": auto_target,
                             "auto_meets_target": fa / b >= auto_target,
                             **({"bare_bf16_images_per_s": round(med["bare_bf16"], 2)} if "bare_bf16" in med else {}),
                             "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()}}
            print(f"{name}: fit/bare = {f / b:.3f} ({f:.1f} vs {b:.1f} img/s); fit amp auto ({auto.name}) / bare fp32 "
                  f"= {fa / b:.3f} ({fa:.1f} img/s)")
    report = {
        "benchmark": "train_throughput", "device": "cpu", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "batch_size": args.batch_size,
        "steps_timed": args.steps, "warmup_steps": args.warmup, "repeats": args.repeats,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "amp_auto": auto.reason, "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from reslab.io import atomic_write_text

    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0 if all(r["meets_target"] and r["auto_meets_target"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
