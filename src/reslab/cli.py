"""The ``reslab`` command. Each subcommand parses its arguments and makes one call into the API.

User errors (:class:`~reslab.errors.ReslabError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import shlex
import shutil
import sys
import textwrap
import typing
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import analysis, experiments, rundir
from . import bench as bench_mod
from ._table import format_table
from ._version import __version__
from .config import RunConfig, list_recipes, load_recipe, resolve_config
from .demo import DEFAULT_DEPTH as DEMO_DEPTH
from .demo import DEFAULT_EPOCHS as DEMO_EPOCHS
from .demo import run_demo
from .dense import evaluate_dense_run, predict_masks, run_task
from .detect import evaluate_detection_run, predict_detections
from .errors import ReslabError
from .evaluate import evaluate_run
from .export import DEFAULT_CHECK_IMAGES, FORMATS, export_run
from .models import check_model_size, create_model, get_model_entry, list_models, model_info
from .models.registry import TASK_NOUNS
from .precision import PRECISIONS, resolve_precision
from .predict import check_runtime, load_run, predict
from .report import render_comparison, render_run_report
from .runtimes import DEFAULT_OPSET, RUNTIMES
from .style import evaluate_style_run, stylize_files
from .superres import evaluate_sr_run, predict_sr
from .train import TrainingInterrupted, fit
from .train.distributed import init_distributed, resolve_device

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``run`` as the subcommand ``name``; ``add_args`` declares its arguments."""

    def bind(run: Handler) -> Handler:
        _COMMANDS[name] = (add_args, run, help)
        return run

    return bind


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _sequence(text: str, key: str, flag: str) -> Any:
    """The forms people type for a list of numbers (``3,4,6,3``, ``(3,4,6,3)``, ``3 4 6 3``) as a
    tuple; any other text unchanged; a list that is neither numbers nor text raises one line."""
    example = f"{key}=3,4,6,3, {key}=(3,4,6,3) or {key}=[3,4,6,3]"
    if text[:1] in "([" and text[-1:] in ")]":
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            try:
                parsed = yaml.safe_load("[" + text[1:-1] + "]")
            except yaml.YAMLError:
                parsed = None
        if isinstance(parsed, list | tuple):
            return parsed
        raise ReslabError(f"{flag} {key}={text}: cannot read this list; write e.g. {example}")
    if text[:1] in "([" or text[-1:] in ")]":
        raise ReslabError(f"{flag} {key}={text}: unbalanced brackets; write e.g. {example}")
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    numeric = [bool(_NUMBER.fullmatch(p)) for p in parts]
    if len(parts) > 1 and all(numeric):
        return [yaml.safe_load(p) for p in parts]
    if "," in text and any(numeric):
        raise ReslabError(f"{flag} {key}={text}: a list of numbers must hold numbers only; write e.g. {example}")
    return text


def parse_sets(items: Sequence[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs with YAML-typed values (``3`` is an int, ``true`` a bool); a list of
    numbers may be written ``3,4,6,3``, ``(3,4,6,3)``, ``[3,4,6,3]`` or ``"3 4 6 3"`` and becomes a tuple."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ReslabError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str):
            parsed = _sequence(parsed.strip(), key, flag)
        out[key] = _tuples(parsed)
    return out


def check_arch(model: str, arch: dict[str, Any], flag: str = "--arch") -> None:
    """Refuse text where ``model``'s spec holds a tuple (``layers=abc``), before the spec splits it
    into characters."""
    spec = getattr(get_model_entry(model).builder, "spec", None)
    for key, value in arch.items():
        default = getattr(spec, key, None)
        if isinstance(default, tuple) and isinstance(value, str):
            example = ",".join(map(str, default)) if all(isinstance(v, int) for v in default) and default else "..."
            raise ReslabError(f"{flag} {key}={value}: {key} is a list of numbers, e.g. {key}={example}")


def parse_size(text: str) -> tuple[int, int, int]:
    """``224`` -> (3, 224, 224); ``1,28,28`` -> (1, 28, 28)."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",")]
    except ValueError:
        raise ReslabError(f"--input-size must be H, HxW or C,H,W integers, got {text!r}") from None
    if any(p <= 0 for p in parts):
        raise ReslabError(f"--input-size must be positive integers, got {text!r}")
    if len(parts) == 1:
        return (3, parts[0], parts[0])
    if len(parts) == 2:
        return (3, parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise ReslabError(f"--input-size must be H, HxW or C,H,W integers, got {text!r}")


# -- reslab models ------------------------------------------------------------------------------
def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*' (default: *, all)")


@command("models", "list registered architectures", _models_args)
def cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise ReslabError(f"no model matches {args.pattern!r}; run 'reslab models' to list them all")
    rows = []
    for n in names:
        e = get_model_entry(n)
        rows.append([n, e.family, getattr(e, "task", "classify"), "x".join(map(str, e.input_size)), e.paper])
    print(format_table(["model", "family", "task", "input", "paper"], rows, align="lllll"))
    return 0


# -- reslab info --------------------------------------------------------------------------------
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered name (see 'reslab models')")
    p.add_argument("--input-size", type=str, default=None, metavar="SIZE",
                   help="H, HxW or C,H,W (default: the model's native size)")
    p.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="classifier outputs (default: the model's, e.g. 1000 for ImageNet nets, 10 for CIFAR nets)")
    p.add_argument("--arch", action="append", metavar="KEY=VALUE",
                   help="architecture option, repeatable, e.g. --arch stride_in=3x3 or --arch layers=3,4,6,3 "
                        "(default: the registered architecture)")


@command("info", "per-stage table of output shapes, parameters and multiply-adds", _info_args)
def cmd_info(args: argparse.Namespace) -> int:
    overrides = parse_sets(args.arch, "--arch")
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    size = parse_size(args.input_size) if args.input_size else get_model_entry(args.model).input_size
    if args.input_size and len(args.input_size.replace("x", ",").split(",")) < 3:
        size = (get_model_entry(args.model).input_size[0], *size[1:])
    check_arch(args.model, overrides)
    check_model_size(args.model, **overrides)  # absurd options refused before anything is allocated
    model = create_model(args.model, **overrides)
    print(model_info(model, size).table())
    return 0


# -- reslab train ---------------------------------------------------------------------------------
def _list_type(item: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        parsed = yaml.safe_load(text) if text.strip().startswith("[") else text.split(",")
        try:
            return [item(str(v).strip()) for v in (parsed if isinstance(parsed, list) else [parsed]) if str(v).strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    parse.__name__ = "list"
    return parse


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def _config_flag(p: argparse.ArgumentParser, f: dataclasses.Field, hint: Any) -> None:
    """One ``reslab train`` flag for the RunConfig field ``f``: its type, choices and help from the
    field's annotation and metadata, the dataclass default shown."""
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
    text = f.metadata.get("help", "") + f" (default: {default if default not in (None, []) else 'unset'})"
    kw: dict[str, Any] = {"dest": f"cfg_{f.name}", "default": None, "help": text}
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    if hint is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        return
    if typing.get_origin(hint) is typing.Literal:
        kw["choices"] = typing.get_args(hint)
    elif typing.get_origin(hint) is list:
        kw.update(type=_list_type(typing.get_args(hint)[0]), metavar="A,B,...")
    elif set(args) == {int, float}:
        kw.update(type=_number, metavar="N")
    else:
        base = args[0] if args else hint
        kw.update(type=base, metavar={int: "N", float: "X"}.get(base, f.name.split("_")[-1].upper()))
    p.add_argument(flag, **kw)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.epilog = ("Defaults shown are the run config's own; a --recipe or --config sets its values first, and flags "
                "override them. --print-config shows the result.")
    p.add_argument("model", nargs="?",
                   help="a registered architecture (see 'reslab models'; default: the --config's or --recipe's model)")
    p.add_argument("--recipe", metavar="NAME", help="a shipped recipe (see 'reslab recipes') or a YAML file (default: none)")
    p.add_argument("--config", metavar="YAML",
                   help="a full config YAML, e.g. the config.yaml of an earlier run (default: none)")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/<model>-<data>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run exactly where it stopped (default: a new run)")
    p.add_argument("--force", action="store_true",
                   help="write into an --out that already holds other files (never into another run)")
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("cli", True):
            _config_flag(p, f, hints[f.name])
    p.add_argument("--arch", action="append", metavar="KEY=VALUE",
                   help="architecture option, repeatable, e.g. --arch shortcut=B or --arch layers=3,4,6,3 (default: none)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any config field, repeatable, e.g. --set milestones=30,60 (default: none)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _train_config(args: argparse.Namespace) -> RunConfig:
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    given.update(parse_sets(args.set))
    config = rundir.read_config(args.resume) if args.resume and rundir.is_run_dir(args.resume) else args.config
    if args.resume and not rundir.is_run_dir(args.resume):
        raise ReslabError(f"{args.resume} is not a run directory (no config.yaml and checkpoints/); "
                          "give the --out of an earlier run")
    arch = parse_sets(args.arch, "--arch")
    model = args.model
    if not model and config:  # the model a --config names decides the default recipe too
        base = config if isinstance(config, dict) else (rundir.load_yaml_file(Path(config)) if Path(config).is_file() else {})
        model = base.get("model") if isinstance(base, dict) else None
    task = getattr(get_model_entry(model), "task", "classify") if isinstance(model, str) and model else "classify"
    cfg = resolve_config(args.model, recipe=args.recipe, config=config, arch=arch,
                         default_recipe={"segment": "segment", "stylize": "style", "restore": "sr",
                                         "detect": "detect"}.get(task, "auto"), **given)
    if arch and cfg.model:
        check_arch(cfg.model, arch)
    return cfg


@command("train", "train a model and write a run directory", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    cfg = _train_config(args)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    get_model_entry(cfg.model)  # unknown names fail before any data is loaded
    try:
        result = fit(cfg, args.resume or args.out, resume=bool(args.resume), force=args.force)
    except TrainingInterrupted as e:
        print(f"reslab: {e}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) == 0:
        render_run_report(result.run_dir)
        print(result.summary())
    return 0


# -- reslab eval ----------------------------------------------------------------------------------
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by 'reslab train'")
    p.add_argument("--protocol", default=None, choices=["center", "10crop", "multiscale"],
                   help="classification runs: test protocol (default: the run's test_protocol); segmentation runs are "
                        "evaluated whole by overlap-tile inference")
    p.add_argument("--split", default="test", choices=["test", "val"], help="which split (default: test)")
    p.add_argument("--checkpoint", default="best", metavar="CKPT", help="best, last or a .safetensors path (default: best)")
    p.add_argument("--data", default=None, metavar="DATASET",
                   help="the dataset to evaluate on (default: the run's), e.g. imagefolder:PATH when the images moved")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the dataset's files are (default: the run's)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per forward pass (default: 256)")
    _runtime_arg(p)
    _amp_arg(p)


def _amp_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default="auto", choices=PRECISIONS,
                   help="precision of the eager model: auto is bf16 autocast on GPUs and on CPUs with native bf16 "
                        "(AMX), fp32 elsewhere (default: auto)")


def _runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="torch", metavar="RUNTIME",
                   help=f"classification runs: torch (eager) or {' or '.join(RUNTIMES)} on the CPU, the model exported to a "
                        "temporary ONNX file (pip install 'reslab[export]') (default: torch)")


def _runtime_device(args: argparse.Namespace) -> str:
    """The device for ``--runtime``: a runtime other than torch runs on the CPU (``auto`` means it)."""
    check_runtime(args.runtime)
    if args.runtime != "torch" and args.device == "auto":
        return "cpu"
    return args.device


def _refuse_runtime(args: argparse.Namespace) -> None:
    """--runtime runs classification runs only: any other run with it is one line."""
    if args.runtime != "torch" and (task := run_task(args.run_dir)) != "classify":
        raise ReslabError(f"--runtime {args.runtime} runs classification runs; {args.run_dir} is a {TASK_NOUNS[task]} run: "
                          "drop --runtime")


@command("eval", "evaluate a trained run: top-1/top-5 error, per-class accuracy, confusion matrix; for a segmentation "
                 "run pixel error, Rand error, IoU and Dice", _eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    _refuse_runtime(args)
    if run_task(args.run_dir) == "stylize":
        return _eval_style(args)
    if run_task(args.run_dir) == "restore":
        return _eval_restore(args)
    if run_task(args.run_dir) == "segment":
        return _eval_segmentation(args)
    if run_task(args.run_dir) == "detect":
        return _eval_detection(args)
    device = resolve_device(_runtime_device(args), int(os.environ.get("LOCAL_RANK", "0")))
    ctx = init_distributed(device)  # under torchrun each rank evaluates a disjoint shard
    precision = resolve_precision(args.amp if args.runtime == "torch" else "fp32", device)
    ev = evaluate_run(args.run_dir, split=args.split, protocol=args.protocol, checkpoint=args.checkpoint,
                      data=args.data, data_dir=args.data_dir, device=device, batch_size=args.batch_size,
                      rank=ctx.rank, world_size=ctx.world_size, runtime=args.runtime, amp_dtype=precision.dtype)
    if ctx.is_main:
        res = ev.result
        acc = ev.to_dict()["per_class_acc"]
        print(format_table(["class", "accuracy %"], [[c, f"{a:.2f}" if a is not None else "-"] for c, a in acc.items()]))
        ran = f", {args.runtime}" if args.runtime != "torch" else f", {precision.name}"
        print(f"{ev.split} ({res.protocol}, {ev.checkpoint} checkpoint{ran}, {res.n} images): "
              f"top-1 error {res.top1_err:.2f}%  top-5 error {res.top5_err:.2f}%  loss {res.loss:.4f}")
        print(f"wrote {ev.json_path}")
    return 0


def _eval_segmentation(args: argparse.Namespace) -> int:
    if args.protocol is not None:
        raise ReslabError(f"--protocol {args.protocol} is a classification test protocol; {args.run_dir} is a "
                          "segmentation run, evaluated whole by overlap-tile inference: drop --protocol")
    device = resolve_device(args.device)
    ev = evaluate_dense_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, data=args.data,
                            data_dir=args.data_dir, device=device, amp_dtype=resolve_precision(args.amp, device).dtype)
    d = ev.to_dict()
    print(format_table(["class", "IoU", "Dice"], [[c, _fixed(d["iou"][c]), _fixed(d["dice"][c])] for c in ev.classes],
                       align="lrr"))
    rand = f"  Rand error {d['rand_err']:.4f}" if d["rand_err"] is not None else ""
    print(f"{ev.split} (tiled, {d['tile']}-pixel tiles, {ev.checkpoint} checkpoint, {d['n']} images): pixel error "
          f"{d['pixel_err']:.2f}%{rand}  mean IoU {_fixed(d['miou'])}  loss {d['loss']:.4f}")
    print(f"wrote {ev.json_path} and {ev.plot_path}")
    return 0


def _eval_detection(args: argparse.Namespace) -> int:
    if args.protocol is not None:
        raise ReslabError(f"--protocol {args.protocol} is a classification test protocol; {args.run_dir} is a "
                          "detection run, evaluated on whole images by COCO's protocol: drop --protocol")
    device = resolve_device(args.device)
    ev = evaluate_detection_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, data=args.data,
                                data_dir=args.data_dir, device=device,
                                amp_dtype=resolve_precision(args.amp, device).dtype)
    d = ev.to_dict()
    rows = [[{"bbox": "boxes", "segm": "masks"}[kind]] + [_percent(d[kind][k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
            for kind in ("bbox", "segm") if d.get(kind)]
    print(format_table(["", "AP", "AP50", "AP75", "APs", "APm", "APl"], rows, align="lrrrrrr"))
    print(f"{ev.split} (COCO protocol via pycocotools, {ev.checkpoint} checkpoint, {d['n']} images): box AP "
          f"{_percent(d['bbox']['AP'])}" + (f"  mask AP {_percent(d['segm']['AP'])}" if d.get("segm") else ""))
    print(f"wrote {ev.json_path} and {ev.plot_path}")
    return 0


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _eval_style(args: argparse.Namespace) -> int:
    for given, flag in ((args.protocol is not None, f"--protocol {args.protocol}"),
                        (args.runtime != "torch", f"--runtime {args.runtime}")):
        if given:
            raise ReslabError(f"{flag} applies to classification runs; {args.run_dir} is a style-transfer run, evaluated "
                              "by its perceptual loss on centre crops: drop it")
    device = resolve_device(args.device)
    ev = evaluate_style_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, data=args.data,
                            data_dir=args.data_dir, device=device, amp_dtype=resolve_precision(args.amp, device).dtype)
    print(ev.summary())
    print(f"wrote {ev.json_path} and {ev.plot_path}")
    return 0


def _eval_restore(args: argparse.Namespace) -> int:
    for given, flag in ((args.protocol is not None, f"--protocol {args.protocol}"),
                        (args.runtime != "torch", f"--runtime {args.runtime}")):
        if given:
            raise ReslabError(f"{flag} applies to classification runs; {args.run_dir} is a super-resolution run, evaluated "
                              "on whole images by tiled inference: drop it")
    device = resolve_device(args.device)
    ev = evaluate_sr_run(args.run_dir, split=args.split, checkpoint=args.checkpoint, data=args.data,
                         data_dir=args.data_dir, device=device, amp_dtype=resolve_precision(args.amp, device).dtype)
    d = ev.to_dict()
    model = rundir.read_config(args.run_dir).get("model")
    print(format_table(["method", "PSNR (dB)", "SSIM"], [["bicubic", f"{d['bicubic']['psnr']:.2f}", f"{d['bicubic']['ssim']:.4f}"],
                                                         [str(model), f"{d['psnr']:.2f}", f"{d['ssim']:.4f}"]], align="lrr"))
    print(f"{ev.split} (tiled, x{d['scale']}, {ev.checkpoint} checkpoint, {d['n']} images; Y channel, {d['scale']}-pixel "
          f"border shaved): PSNR {d['psnr']:.2f} dB ({d['gain_db']:+.2f} dB over bicubic)  SSIM {d['ssim']:.4f}")
    print(f"wrote {ev.json_path} and {ev.plot_path}")
    return 0


def _fixed(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


# -- reslab predict -------------------------------------------------------------------------------
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by 'reslab train'")
    p.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    p.add_argument("--topk", type=int, default=None, metavar="K",
                   help="classification runs: classes to show per image (default: 5)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="segmentation runs: the folder for NAME_mask.png and NAME_overlay.png of each image "
                        "(any image size; default: masks/); style-transfer runs: NAME.png for one image, or the folder for "
                        "NAME_stylized.png of each (default: stylized/); super-resolution runs: FILE.png for one image, or the "
                        "folder for NAME_x<scale>.png of each (default: upscaled/); detection runs: the folder for "
                        "NAME_det.png of each, boxes, labels, scores and masks drawn (default: det/)")
    p.add_argument("--checkpoint", default="best", metavar="CKPT", help="best, last or a .safetensors path (default: best)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--score-threshold", type=float, default=None, metavar="P",
                   help="detection runs: draw and list detections scoring at least P (default: 0.5)")
    p.add_argument("--cam", default=None, metavar="DIR",
                   help="classification runs: also write DIR/NAME_cam.png, the Grad-CAM heat map of the predicted class "
                        "(default: none)")
    _runtime_arg(p)
    _amp_arg(p)


@command("predict", "top-k classes with probabilities for image files; masks for a segmentation run", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    if args.cam is not None and run_task(args.run_dir) != "classify":
        raise ReslabError(f"--cam draws Grad-CAM for classification runs; {args.run_dir} is a {TASK_NOUNS[run_task(args.run_dir)]} run: "
                          "drop --cam")
    if args.cam is not None and args.runtime != "torch":
        raise ReslabError(f"--cam needs the eager model's gradients; drop --runtime {args.runtime}")
    _refuse_runtime(args)
    task = run_task(args.run_dir)
    if task != "classify" and args.topk is not None:
        made, out = ("masks", "--out DIR") if task == "segment" else ("images", "--out FILE.png or a folder")
        raise ReslabError(f"--topk applies to classification runs; {args.run_dir} is a {TASK_NOUNS[task]} run, whose "
                          f"predictions are {made}: drop --topk ({out} says where they go)")
    if task == "stylize":
        return _predict_style(args)
    if task == "restore":
        return _predict_restore(args)
    if args.score_threshold is not None and task != "detect":
        raise ReslabError(f"--score-threshold applies to detection runs; {args.run_dir} is a {TASK_NOUNS[task]} run: "
                          "drop it")
    if task == "detect":
        return _predict_detection(args)
    if task == "segment":
        run = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
        for m in predict_masks(run, args.images, args.out or "masks"):
            share = ", ".join(f"{c} {100 * v:.1f}%" for c, v in m.fractions.items())
            print(f"{m.path}: {share} -> {m.mask_path}, {m.overlay_path}")
        return 0
    if args.out is not None:
        raise ReslabError(f"--out writes the masks of a segmentation run; {args.run_dir} is a classification run: "
                          "drop --out to print its top-k classes")
    topk = 5 if args.topk is None else args.topk
    if topk < 1:
        raise ReslabError(f"--topk must be at least 1, got {topk}")
    run = load_run(args.run_dir, args.checkpoint, resolve_device(_runtime_device(args)), runtime=args.runtime)
    for pred in predict(run, args.images, topk, amp=args.amp):
        print(pred.path)
        for cls, prob in pred.top:
            print(f"  {prob * 100:6.2f}%  {cls}")
    if args.cam is not None:
        for src, cls, dst in analysis.write_cams(run, args.images, args.cam):
            print(f"{src}: Grad-CAM of {cls} -> {dst}")
    return 0


def _predict_detection(args: argparse.Namespace) -> int:
    threshold = 0.5 if args.score_threshold is None else args.score_threshold
    if not 0.0 <= threshold <= 1.0:
        raise ReslabError(f"--score-threshold must be between 0 and 1, got {threshold}")
    run = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    for p in predict_detections(run, args.images, args.out or "det", score_threshold=threshold):
        found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in p.detections) or "nothing"
        print(f"{p.path}: {len(p.detections)} found ({found}) -> {p.out_path}")
    return 0


def _predict_style(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    run = load_run(args.run_dir, args.checkpoint, device)
    for src, dst in stylize_files(run, args.images, args.out, amp_dtype=resolve_precision(args.amp, device).dtype):
        print(f"{src} -> {dst}")
    return 0


def _predict_restore(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    run = load_run(args.run_dir, args.checkpoint, device)
    for p in predict_sr(run, args.images, args.out, amp_dtype=resolve_precision(args.amp, device).dtype):
        print(f"{p.path} ({p.in_size[0]}x{p.in_size[1]}) -> {p.out_path} ({p.out_size[0]}x{p.out_size[1]})")
    return 0


# -- reslab export --------------------------------------------------------------------------------
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a classification run directory written by 'reslab train'")
    p.add_argument("--format", default="onnx", metavar="FORMAT",
                   help=f"{', '.join(FORMATS)} (default: onnx)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the file to write; its preprocessing and class names also go to FILE.json beside it (required, no default)")
    p.add_argument("--checkpoint", default="best", metavar="CKPT", help="best, last or a .safetensors path (default: best)")
    p.add_argument("--int8", action="store_true",
                   help="onnx: write the model quantised to int8 (ONNX Runtime static, calibrated on training images) and "
                        "report its accuracy change (default: float32)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N", help=f"onnx: the ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--check-images", type=int, default=DEFAULT_CHECK_IMAGES, metavar="N",
                   help=f"test images of the run's data the exported file is checked on against eager PyTorch "
                        f"(default: {DEFAULT_CHECK_IMAGES})")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where the run's dataset is (default: the run's)")


@command("export", "write a run's model as ONNX, TorchScript or a torch.export program, checked against eager PyTorch",
         _export_args)
def cmd_export(args: argparse.Namespace) -> int:
    print(export_run(args.run_dir, format=args.format, out=args.out, checkpoint=args.checkpoint, int8=args.int8,
                     check_images=args.check_images, opset=args.opset, data_dir=args.data_dir).summary())
    return 0


# -- reslab bench ---------------------------------------------------------------------------------
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a registered model name (random weights) or a run directory (its weights and "
                                  "real test images, for top-1 error and agreement)")
    p.add_argument("--batch", type=_list_type(int), default=[1, 16], metavar="B,B,...",
                   help="batch sizes (default: 1,16)")
    p.add_argument("--paths", type=_list_type(str), default=None, metavar="P,P,...",
                   help=f"inference paths, from {', '.join(bench_mod.PATHS)} (default: all but compile)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu (default: cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="intra-op threads (default: all cores)")
    p.add_argument("--seconds", type=float, default=2.0, metavar="S",
                   help="time each path and batch for at least S seconds (default: 2)")
    p.add_argument("--images", type=int, default=1000, metavar="N",
                   help="a run's test images for top-1 error and agreement with eager (default: 1000)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="where a run's dataset files are (default: the run's)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON here (default: none)")


@command("bench", "time every inference path (eager, channels_last, BN-folded, bf16, ONNX Runtime, OpenVINO, int8) "
                  "against torchvision's eager model, in one process", _bench_args)
def cmd_bench(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).is_dir():
        raise ReslabError(f"--json {args.json} is a directory; give a file name, e.g. {Path(args.json) / 'bench.json'}")
    report = bench_mod.bench(args.target, batches=args.batch, paths=args.paths, threads=args.threads,
                             seconds=args.seconds, images=args.images, data_dir=args.data_dir, device=args.device,
                             log=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.table())
    for path, why in report.skipped.items():
        print(f"skipped {path}: {why}")
    print(f"{report.threads} threads on {report.cpu}; fp32 matmul peak {report.fp32_peak_gflops:.0f} GFLOP/s"
          + (f", bf16 {report.bf16_peak_gflops:.0f}" if report.bf16_peak_gflops else f" ({report.bf16_reason})"))
    if report.accuracy:
        print(f"accuracy on {report.accuracy_source}")
    print("\n".join(report.findings()))
    if args.json:
        print(f"wrote {bench_mod.write_report(report, args.json)}")
    return 0


# -- reslab demo ----------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="where the two runs and the report go (default: runs/demo)")
    p.add_argument("--depth", type=int, default=DEMO_DEPTH, metavar="N",
                   help=f"CIFAR-style depth 6n+2 of both nets (default: {DEMO_DEPTH})")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, metavar="N", help=f"epochs per net (default: {DEMO_EPOCHS})")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="train each net with seeds 0..N-1 and print mean ± std (default: 1)")
    p.add_argument("--data", default="embedded", metavar="DATASET", help="dataset (default: embedded, shipped with reslab)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")


@command("demo", "offline demo: a plain and a residual net side by side on the embedded data", _demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    print(run_demo(args.out, depth=args.depth, epochs=args.epochs, seeds=args.seeds, data=args.data,
                   device=args.device).summary)
    return 0


# -- reslab report / recipes ----------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run directories (or experiment directories)")
    p.add_argument("--out", metavar="DIR", help="with several runs: write a comparison report here (default: none)")
    p.add_argument("--title", default="Comparison", metavar="TEXT", help="the comparison report's title (default: Comparison)")


@command("report", "re-render reports and plots from run directories", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.paths]
    for p in paths:
        if not rundir.is_run_dir(p) and not (p / "experiment.json").is_file():
            raise ReslabError(f"{p} is neither a run directory nor an experiment directory")
    written = [render_run_report(p) if rundir.is_run_dir(p) else experiments.render_experiment(p) for p in paths]
    if args.out:
        written.append(render_comparison([p for p in paths if rundir.is_run_dir(p)], Path(args.out), title=args.title))
    print("\n".join(map(str, written)))
    return 0


def _recipes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="print this recipe in full (default: list them all)")


_ABBREVIATIONS = ("al.", "Sec.", "Fig.", "Eq.", "e.g.", "i.e.", "vs.", "cf.", "approx.")


def recipe_summary(text: str) -> str:
    """The first sentence of a recipe's header comment, whole (abbreviations such as "et al." and
    "Sec." do not end it), or the whole header if it has no sentence end."""
    header = " ".join(line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")).strip()
    for m in re.finditer(r"[.!?](?=\s+[A-Z(])", header):
        if not header[: m.end()].endswith(_ABBREVIATIONS):
            return header[: m.end()]
    return header


@command("recipes", "list the shipped training recipes, or print one", _recipes_args)
def cmd_recipes(args: argparse.Namespace) -> int:
    if args.name:
        load_recipe(args.name)  # validates the name with a clear error
        print((resources.files("reslab") / "recipes" / f"{args.name}.yaml").read_text(), end="")
        return 0
    width = max(shutil.get_terminal_size((100, 24)).columns - 1, 60)
    names = list_recipes()
    pad = max(map(len, names)) + 2
    for name in names:
        text = recipe_summary((resources.files("reslab") / "recipes" / f"{name}.yaml").read_text())
        print(textwrap.fill(text, width, initial_indent=name.ljust(pad), subsequent_indent=" " * pad,
                            break_long_words=False, break_on_hyphens=False))
    print("\n'reslab recipes NAME' prints one in full: its notes and every value.")
    return 0


# -- reslab reproduce ------------------------------------------------------------------------------
def _reproduce_args(p: argparse.ArgumentParser) -> None:
    budgets = ", ".join(experiments.BUDGETS)
    p.add_argument("experiment", help=f"one of {', '.join(experiments.NAMES)}")
    p.add_argument("paths", nargs="*", help="responses: run directories or experiment directories to measure; "
                                           "transfer: a classifier run whose backbone the detectors start from "
                                           "(default: one trained on --pretrain-data)")
    p.add_argument("--data", default="cifar10", metavar="DATASET",
                   help="dataset: cifar10, imagefolder:PATH (a folder or .tar.gz of one), embedded; transfer: the "
                        "detection data, pennfudan[:PATH] or coco:PATH (default: cifar10; pennfudan for transfer)")
    p.add_argument("--pretrain-data", default="cifar10", metavar="DATASET",
                   help="transfer: the classification data the backbone pretrains on (default: cifar10)")
    p.add_argument("--detectors", default=None, metavar="NAME,NAME",
                   help="transfer: the detectors, over one backbone (default: maskrcnn_resnet18_fpn,"
                        "fasterrcnn_resnet18_fpn)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where to look for the dataset's files first (default: $RESLAB_DATA, then the cache)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="experiment directory (default: runs/EXPERIMENT-BUDGET; runs/responses)")
    p.add_argument("--budget", default=experiments.DEFAULT_BUDGET, metavar="BUDGET",
                   help=f"training budget, one of {budgets}, auto (default: full on a GPU, {experiments.CPU_BUDGET} on a "
                        "CPU, or the budget --out was started with): full is the paper's 64k-iteration schedule, "
                        "the cpu-* presets shorten it for a CPU, tiny takes seconds (tests); the report states the "
                        "preset's settings; transfer: full, cpu-60min or tiny")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="runs per net; tables give mean ± std (default: 1)")
    p.add_argument("--depths", default=None, metavar="D,D,...",
                   help="comma-separated depths, e.g. 20,32,44,56,110,1202 (default: the experiment's)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--images", type=int, default=500, metavar="N", help="responses: test images measured (default: 500)")
    p.add_argument("--checkpoint", default="best", metavar="CKPT", help="responses: best or last weights (default: best)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: all cores; on a busy shared CPU 1 can be much faster)")
    p.add_argument("--dry-run", action="store_true", help="list the runs that would be trained, train nothing")


@command("reproduce", "the paper's experiments, one command each, with reports beside the paper's numbers", _reproduce_args)
def cmd_reproduce(args: argparse.Namespace) -> int:
    report = experiments.reproduce(
        args.experiment, args.paths, out=args.out, budget=args.budget, data=args.data, data_dir=args.data_dir,
        seeds=args.seeds, depths=args.depths, device=args.device, images=args.images, checkpoint=args.checkpoint,
        threads=args.threads, dry_run=args.dry_run, command=getattr(args, "command_line", None),
        pretrain_data=args.pretrain_data, detectors=args.detectors)
    if not args.dry_run:
        print(f"report: {report}\n{experiments.findings_text(report)}".rstrip())
    return 0


# -- reslab analyze --------------------------------------------------------------------------------
def _analyze_args(p: argparse.ArgumentParser) -> None:
    kinds = ", ".join([*analysis.KINDS, "report"])
    p.add_argument("kind", help=f"one of {kinds}")
    p.add_argument("targets", nargs="*",
                   help="model names (measured at initialisation) and/or run directories (trained weights); "
                        "cam: RUN IMAGE; report: a folder of analysis directories")
    p.add_argument("--out", default=None, metavar="DIR", help="analysis directory (default: analyses/KIND-TARGETS)")
    p.add_argument("--data", default="embedded", metavar="DATASET",
                   help="images for model names (runs use their own): embedded (default, shipped with reslab), cifar10, "
                        "imagefolder:PATH")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where to look for the dataset's files first (default: $RESLAB_DATA, then the cache)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="test images per target (default: gradients 32, shattering 8, paths 16, blocks 200, lesion 1000, "
                        "landscape 500)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="initialisation and sampling seed (default: 0)")
    p.add_argument("--checkpoint", default="last", metavar="CKPT", help="a run's best or last weights (default: last)")
    p.add_argument("--samples", type=int, default=10, metavar="N",
                   help="paths: block choices per length; lesion: random sets per k (default: 10)")
    p.add_argument("--points", type=int, default=256, metavar="N", help="shattering: inputs per line (default: 256)")
    p.add_argument("--lines", type=int, default=4, metavar="N", help="shattering: lines averaged (default: 4)")
    p.add_argument("--class", dest="target_class", type=int, default=None, metavar="K",
                   help="cam: the class index explained (default: the predicted class)")
    p.add_argument("--device", default="cpu", metavar="DEVICE", help="cpu, cuda[:N] or auto (default: cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch (default: all cores; on a busy shared CPU 1 can be much faster)")
    p.add_argument("--grid", type=int, default=21, metavar="N", help="landscape: points per axis, odd (default: 21)")
    p.add_argument("--span", type=float, default=1.0, metavar="X", help="landscape: the grid covers [-X, X] (default: 1)")
    p.add_argument("--2d", dest="two_d", action="store_true", help="landscape: a 2-D grid of two directions (default: a line)")
    p.add_argument("--hessian-iters", type=int, default=20, metavar="N",
                   help="landscape: power iterations per Hessian eigenvalue (default: 20)")


@command("analyze", "why residual nets train: gradients, shattering, landscape, paths, blocks, lesion, cam, report",
         _analyze_args)
def cmd_analyze(args: argparse.Namespace) -> int:
    if args.kind == "report":
        if len(args.targets) != 1:
            raise ReslabError("analyze report takes one folder of analysis directories, e.g. reslab analyze report analyses/")
        print(f"report: {analysis.render_collection(args.targets[0])}")
        return 0
    targets, image = list(args.targets), None
    if args.kind == "cam":
        if len(targets) != 2:
            raise ReslabError("analyze cam takes a run directory and an image: reslab analyze cam RUN IMAGE")
        targets, image = targets[:1], targets[1]
    options = analysis.Options(data=args.data, data_dir=args.data_dir, images=args.images, seed=args.seed,
                               checkpoint=args.checkpoint, device=args.device, samples=args.samples, points=args.points,
                               lines=args.lines, image=image, target_class=args.target_class, threads=args.threads,
                               grid=args.grid, span=args.span, two_d=args.two_d, hessian_iters=args.hessian_iters)
    report = analysis.analyze(args.kind, targets, out=args.out, options=options,
                              command=getattr(args, "command_line", None))
    print(f"report: {report}")
    for finding in analysis.read_analysis(report.parent)["findings"]:
        print(f"  {finding}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reslab", description="Deep residual learning for image recognition.")
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_args, run, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "reslab " + shlex.join(argv)  # recorded by commands that log how they were run
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return args._run(args)
    except ReslabError as e:
        print(f"reslab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
