"""reslab's unet_resnet34 against segmentation_models_pytorch's Unet("resnet34") in one process.

Both networks see the same batches (one reslab SegLoader, seeded: the same tiles, flips, rotations
and elastic deformations), the same loss (per-pixel cross-entropy), optimizer (AdamW, lr 1e-3,
weight decay 1e-4, cosine decay) and number of steps, from random initialisation
(``encoder_weights=None``), the same decoder (bilinear up-sampling on both). Steps alternate between the two, so both are timed under the same load;
training speed is images per second of forward + backward + step. Both are then evaluated on the
held-out slices by the same overlap-tile inference (:func:`reslab.dense.evaluate_dense`), which is
also timed. Writes a JSON of both sets of figures and their ratios::

    python benchmarks/segmentation.py --data isbi2012:PATH --steps 200 --out benchmarks/results/segmentation.json

segmentation_models_pytorch is a dev dependency (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from reslab import create_model, load_dataset
from reslab.data.segmentation import SegLoader, stack_for_normalizer
from reslab.data.transforms import Normalizer
from reslab.dense import evaluate_dense
from reslab.segmetrics import seg_loss


def smp_unet(in_chans: int, classes: int) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    # reslab's decoder up-samples bilinearly; smp's default is nearest: the same operation on both sides
    return smp.Unet("resnet34", encoder_weights=None, in_channels=in_chans, classes=classes,
                    decoder_interpolation="bilinear")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="isbi2012:../shared/data/isbi2012")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="test", choices=["test", "val"])
    ap.add_argument("--out", default="benchmarks/results/segmentation.json")
    args = ap.parse_args()

    splits = load_dataset(args.data, seed=args.seed)
    k, c = len(splits.classes), splits.channels
    normalizer = Normalizer.fit("per_channel", stack_for_normalizer(splits.train))
    loader = SegLoader(splits.train, args.batch_size, crop_size=args.tile, normalizer=normalizer,
                       device=torch.device("cpu"), seed=args.seed, elastic_sigma=10.0)
    nets = {}
    for name, build in (("reslab", lambda: create_model("unet_resnet34", in_chans=c, num_classes=k)),
                        ("smp", lambda: smp_unet(c, k))):
        torch.manual_seed(args.seed)
        model = build()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        nets[name] = {"model": model.train(), "opt": opt, "seconds": 0.0, "losses": [],
                      "params": sum(p.numel() for p in model.parameters())}

    step, epoch, warmup = 0, 0, 3  # the first steps (allocation, kernel choice) are not timed
    while step < args.steps:
        loader.set_epoch(epoch)
        for x, y in loader.iterate():
            if step >= args.steps:
                break
            lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
            for net in nets.values():
                for g in net["opt"].param_groups:
                    g["lr"] = lr
                t = time.perf_counter()
                loss = seg_loss(net["model"](x), y, "ce")
                net["opt"].zero_grad(set_to_none=True)
                loss.backward()
                net["opt"].step()
                if step >= warmup:
                    net["seconds"] += time.perf_counter() - t
                net["losses"].append(float(loss.detach()))
            step += 1
        epoch += 1

    images = splits.test if args.split == "test" else splits.val
    out: dict = {"data": args.data.split(":")[0], "split": args.split, "images": len(images), "steps": args.steps,
                 "batch_size": args.batch_size, "tile": args.tile, "seed": args.seed, "loss": "ce",
                 "optimizer": "adamw lr 1e-3 wd 1e-4, cosine", "augment": "flips, rot90, elastic sigma 10",
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
                 platform.machine()}
    for name, net in nets.items():
        t = time.perf_counter()
        res, _ = evaluate_dense(net["model"], images, normalizer=normalizer, num_classes=k, tile=args.tile)
        eval_s = time.perf_counter() - t
        d = res.to_dict(list(splits.classes))
        out[name] = {"params": net["params"], "train_images_per_s": round((args.steps - warmup) * args.batch_size
                                                                        / net["seconds"], 3),
                     "eval_images_per_s": round(len(images) / eval_s, 3), "final_train_loss":
                     round(sum(net["losses"][-10:]) / len(net["losses"][-10:]), 4),
                     "pixel_err": round(d["pixel_err"], 3), "rand_err": d["rand_err"] and round(d["rand_err"], 4),
                     "miou": round(d["miou"], 4), "iou": d["iou"]}
        print(name, out[name])
    r, s = out["reslab"], out["smp"]
    out["ratios"] = {"train_speed_reslab_over_smp": round(r["train_images_per_s"] / s["train_images_per_s"], 3),
                     "eval_speed_reslab_over_smp": round(r["eval_images_per_s"] / s["eval_images_per_s"], 3),
                     "pixel_err_reslab_minus_smp": round(r["pixel_err"] - s["pixel_err"], 3),
                     "miou_reslab_minus_smp": round(r["miou"] - s["miou"], 4)}
    print("ratios", out["ratios"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
