"""The ``reslab`` command. Each subcommand parses its arguments and makes one call into the API.

User errors (:class:`~reslab.errors.ReslabError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

import yaml

from .errors import ReslabError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None]):
    """Register ``run`` as the subcommand ``name``; ``add_args`` declares its arguments."""

    def bind(run: Handler) -> Handler:
        _COMMANDS[name] = (add_args, run, help)
        return run

    return bind


def parse_sets(items: Sequence[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` pairs with YAML-typed values (``3`` is an int, ``true`` a bool, ``[1,2]`` a list)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ReslabError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        out[key.replace("-", "_")] = tuple(parsed) if isinstance(parsed, list) else parsed
    return out


def parse_size(text: str) -> tuple[int, int, int]:
    """``224`` -> (3, 224, 224); ``1,28,28`` -> (1, 28, 28)."""
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    except ValueError:
        raise ReslabError(f"--input-size must be H, HxW or C,H,W integers, got {text!r}") from None
    if len(parts) == 1:
        return (3, parts[0], parts[0])
    if len(parts) == 2:
        return (3, parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise ReslabError(f"--input-size must be H, HxW or C,H,W integers, got {text!r}")


# -- reslab models ------------------------------------------------------------------------------
def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'resnet*'")


@command("models", "list registered architectures", _models_args)
def cmd_models(args: argparse.Namespace) -> int:
    from ._table import format_table
    from .models.registry import get_model_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise ReslabError(f"no model matches {args.pattern!r}; run 'reslab models' to list them all")
    rows = []
    for n in names:
        e = get_model_entry(n)
        rows.append([n, e.family, "x".join(map(str, e.input_size)), e.paper])
    print(format_table(["model", "family", "input", "paper"], rows, align="llll"))
    return 0


# -- reslab info --------------------------------------------------------------------------------
def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered name (see 'reslab models')")
    p.add_argument("--input-size", type=str, default=None, help="H, HxW or C,H,W (default: the model's native size)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture option, e.g. --arch stride_in=3x3")


@command("info", "per-stage table of output shapes, parameters and multiply-adds", _info_args)
def cmd_info(args: argparse.Namespace) -> int:
    from .models import create_model, get_model_entry, model_info

    overrides = parse_sets(args.arch, "--arch")
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    size = parse_size(args.input_size) if args.input_size else get_model_entry(args.model).input_size
    if args.input_size and len(args.input_size.replace("x", ",").split(",")) < 3:
        size = (get_model_entry(args.model).input_size[0], *size[1:])
    model = create_model(args.model, **overrides)
    print(model_info(model, size).table())
    return 0


# -- reslab train ---------------------------------------------------------------------------------
_TRAIN_FLAGS = [
    # (flag, config field, type, help)
    ("--data", "data", str, "cifar10, cifar100, mnist, fashion_mnist, embedded or imagefolder:PATH"),
    ("--data-dir", "data_dir", str, "where dataset files are (or go)"),
    ("--epochs", "epochs", int, None),
    ("--iterations", "iterations", int, "train for this many iterations (wins over --epochs)"),
    ("--batch-size", "batch_size", int, "global mini-batch size"),
    ("--lr", "lr", float, None),
    ("--momentum", "momentum", float, None),
    ("--weight-decay", "weight_decay", float, None),
    ("--schedule", "schedule", str, "step, cosine, onecycle, constant or plateau"),
    ("--label-smoothing", "label_smoothing", float, None),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this value"),
    ("--val-size", "val_size", float, "images (or a fraction) held out of the training set for validation"),
    ("--image-size", "image_size", int, "resize image-folder images to this size"),
    ("--device", "device", str, "auto (default), cpu, cuda or cuda:N"),
    ("--seed", "seed", int, None),
    ("--workers", "num_workers", int, "loader processes for streamed image folders"),
    ("--name", "name", str, "a display name for reports"),
]
_TRAIN_SWITCHES = [
    ("--nesterov", "nesterov", True), ("--deterministic", "deterministic", True),
    ("--channels-last", "channels_last", True), ("--compile", "compile", True), ("--no-amp", "amp", False),
    ("--sync-bn", "sync_bn", True), ("--scale-lr", "scale_lr", True), ("--skip-bad", "skip_bad", True),
    ("--no-progress", "progress", False),
]
_RESUME_MAY_CHANGE = {"epochs", "iterations", "device", "progress", "num_workers"}


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="a registered architecture (see 'reslab models')")
    p.add_argument("--recipe", help="a shipped recipe (see 'reslab recipes') or a YAML file")
    p.add_argument("--config", help="a full config YAML, e.g. the config.yaml of an earlier run")
    p.add_argument("--out", help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run exactly where it stopped")
    for flag, dest, typ, help_text in _TRAIN_FLAGS:
        p.add_argument(flag, dest=f"cfg_{dest}", type=typ, default=None, help=help_text)
    for flag, dest, value in _TRAIN_SWITCHES:
        p.add_argument(flag, dest=f"cfg_{dest}", action="store_const", const=value, default=None)
    p.add_argument("--arch", action="append", metavar="KEY=VALUE", help="architecture option, e.g. --arch shortcut=B")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any config field, e.g. --set milestones=[30,60]")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    if "val_size" in given and float(given["val_size"]).is_integer() and given["val_size"] >= 1:
        given["val_size"] = int(given["val_size"])
    given.update(parse_sets(args.set))
    return given


@command("train", "train a model and write a run directory", _train_args)
def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .train.checkpoint import is_run_dir
    from .train.config import make_config
    from .train.loop import TrainingInterrupted, fit

    overrides = _train_overrides(args)
    arch = parse_sets(args.arch, "--arch")
    if args.resume:
        run_dir = Path(args.resume)
        if not is_run_dir(run_dir):
            raise ReslabError(f"{run_dir} is not a run directory (no config.yaml and checkpoints/); give the --out of an earlier run")
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        if args.model and args.model != saved.get("model"):
            raise ReslabError(f"{run_dir} holds a {saved.get('model')} run, not {args.model}")
        changed = sorted(set(overrides) - _RESUME_MAY_CHANGE) + (["--arch"] if arch else []) + (["--recipe"] if args.recipe else [])
        if changed:
            raise ReslabError(f"cannot change {', '.join(changed)} when resuming; only {', '.join(sorted(_RESUME_MAY_CHANGE))} may change")
        cfg = make_config(saved, **overrides)
        out, resume = run_dir, True
    else:
        base = None
        if args.config:
            path = Path(args.config)
            if not path.is_file():
                raise ReslabError(f"config file not found: {path}")
            base = yaml.safe_load(path.read_text()) or {}
        if args.model:
            overrides["model"] = args.model
        elif not base:
            raise ReslabError("name a model to train, e.g. 'reslab train resnet20 --data cifar10' (or give --config)")
        if arch:
            overrides["model_args"] = {**((base or {}).get("model_args") or {}), **arch}
        cfg = make_config(base, recipe=args.recipe, **overrides)
        from .models.registry import get_model_entry

        get_model_entry(cfg.model)  # unknown names fail before any data is loaded
        out, resume = args.out, False
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    try:
        result = fit(cfg, out, resume=resume)
    except TrainingInterrupted as e:
        print(f"reslab: {e}", file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    best = f"best val err {result.best_val_err:.2f}% (epoch {result.best_epoch})" if result.best_val_err is not None else "no validation split"
    test = f", test err {result.test['top1_err']:.2f}% ({result.test['protocol']})" if result.test else ""
    print(f"{result.run_dir}: {result.steps} steps in {result.wall_time:.0f}s, {best}{test}")
    return 0


# -- reslab eval ----------------------------------------------------------------------------------
def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--protocol", default=None, help="center, 10crop or multiscale (default: the recipe's)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--checkpoint", default="best", help="best, last or a .safetensors path")
    p.add_argument("--data", default=None,
                   help="the dataset to evaluate on (default: the run's), e.g. imagefolder:PATH when the images moved")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)


@command("eval", "evaluate a trained run: top-1/top-5 error, per-class accuracy, confusion matrix", _eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from ._table import format_table
    from .data import load_dataset
    from .evaluate import evaluate
    from .io import atomic_write_text
    from .runs import load_run
    from .train.distributed import resolve_device

    from .train.distributed import init_distributed

    device = resolve_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = init_distributed(device)  # under torchrun each rank evaluates a disjoint shard
    run = load_run(args.run_dir, args.checkpoint, device)
    cfg = run.config
    data_name = args.data or cfg.data
    splits = load_dataset(data_name, data_dir=args.data_dir or cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed,
                          skip_bad=cfg.skip_bad, image_size=cfg.image_size)
    if list(splits.classes) != list(run.classes):
        raise ReslabError(f"{data_name} has classes {', '.join(map(str, splits.classes[:5]))}... but the run was trained "
                          f"on {', '.join(map(str, run.classes[:5]))}...; give the data it was trained on")
    data = splits.test if args.split == "test" else splits.val
    if data is None or len(data) == 0:
        raise ReslabError(f"{data_name} has no {args.split} split to evaluate")
    protocol = args.protocol or cfg.test_protocol
    res = evaluate(run.model, data, normalizer=run.normalizer, num_classes=len(run.classes), protocol=protocol,
                   batch_size=args.batch_size, device=device, pad=cfg.pad, crop_size=cfg.crop_size,
                   scales=cfg.test_scales or None, num_workers=cfg.num_workers, rank=ctx.rank, world_size=ctx.world_size)
    if not ctx.is_main:
        return 0
    report = {"split": args.split, "checkpoint": run.checkpoint, **res.to_dict(run.classes)}
    name = f"eval-{args.split}-{protocol}"
    atomic_write_text(run.run_dir / f"{name}.json", json.dumps(report, indent=2))
    try:
        from .report import plot_confusion_matrix

        plot_confusion_matrix(res.confusion, run.classes, run.run_dir / "plots" / f"confusion-{args.split}-{protocol}.png")
    except ImportError:
        pass
    rows = [[c, f"{a:.2f}" if a is not None else "-"] for c, a in report["per_class_acc"].items()]
    print(format_table(["class", "accuracy %"], rows))
    print(f"{args.split} ({protocol}, {run.checkpoint} checkpoint, {res.n} images): "
          f"top-1 error {res.top1_err:.2f}%  top-5 error {res.top5_err:.2f}%  loss {res.loss:.4f}")
    print(f"wrote {run.run_dir / (name + '.json')}")
    return 0


# -- reslab predict -------------------------------------------------------------------------------
def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--device", default="auto")


@command("predict", "top-k classes with probabilities for image files", _predict_args)
def cmd_predict(args: argparse.Namespace) -> int:
    from .runs import load_run, predict
    from .train.distributed import resolve_device

    if args.topk < 1:
        raise ReslabError(f"--topk must be at least 1, got {args.topk}")
    run = load_run(args.run_dir, args.checkpoint, resolve_device(args.device))
    for pred in predict(run, args.images, args.topk):
        print(pred.path)
        for cls, prob in pred.top:
            print(f"  {prob * 100:6.2f}%  {cls}")
    return 0


# -- reslab demo ----------------------------------------------------------------------------------
def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--depth", type=int, default=None, help="CIFAR-style depth 6n+2 (default 20)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--data", default="embedded")
    p.add_argument("--device", default="auto")


@command("demo", "offline demo: a plain and a residual net side by side on the embedded data", _demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    kwargs = {k: v for k, v in (("depth", args.depth), ("epochs", args.epochs)) if v is not None}
    result = run_demo(args.out, data=args.data, device=args.device, **kwargs)
    print(result.summary)
    return 0


# -- reslab report / recipes ----------------------------------------------------------------------
def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run directories (or experiment directories)")
    p.add_argument("--out", help="with several runs: write a comparison report here")
    p.add_argument("--title", default="Comparison")


@command("report", "re-render reports and plots from run directories", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import render_comparison, render_run_report
    from .train.checkpoint import is_run_dir

    written = []
    for p in map(Path, args.paths):
        if is_run_dir(p):
            written.append(render_run_report(p))
        elif (p / "experiment.json").is_file():
            from .experiments import render_experiment

            written.append(render_experiment(p))
        else:
            raise ReslabError(f"{p} is neither a run directory nor an experiment directory")
    if args.out:
        written.append(render_comparison([p for p in map(Path, args.paths) if is_run_dir(p)], Path(args.out), title=args.title))
    for w in written:
        print(w)
    return 0


def _recipes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="print this recipe's settings")


@command("recipes", "list the shipped training recipes, or print one", _recipes_args)
def cmd_recipes(args: argparse.Namespace) -> int:
    from importlib import resources

    from .train.config import list_recipes, load_recipe

    if args.name:
        load_recipe(args.name)  # validates the name with a clear error
        print((resources.files("reslab") / "recipes" / f"{args.name}.yaml").read_text(), end="")
        return 0
    for name in list_recipes():
        text = (resources.files("reslab") / "recipes" / f"{name}.yaml").read_text()
        first = next((l.lstrip("# ").strip() for l in text.splitlines() if l.startswith("#")), "")
        print(f"{name:16s} {first}")
    return 0


# -- reslab reproduce ------------------------------------------------------------------------------
def _reproduce_args(p: argparse.ArgumentParser) -> None:
    from .experiments import add_reproduce_args

    add_reproduce_args(p)


@command("reproduce", "the paper's experiments, one command each, with reports beside the paper's numbers", _reproduce_args)
def cmd_reproduce(args: argparse.Namespace) -> int:
    from .experiments import run_reproduce

    return run_reproduce(args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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
    args = parser.parse_args(argv)
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
