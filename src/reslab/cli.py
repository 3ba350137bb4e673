"""The ``reslab`` command. Each subcommand parses its arguments and makes one call into the API.

User errors (:class:`~reslab.errors.ReslabError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

import yaml

from .errors import ReslabError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {}


def command(name: str, help: str):
    """Register a subcommand: the decorated function adds its arguments; ``run`` is returned."""

    def wrap(add_args: Callable[[argparse.ArgumentParser], None]):
        def bind(run: Handler) -> Handler:
            _COMMANDS[name] = (add_args, run, help)
            return run

        return bind

    return wrap


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with YAML-typed values (``3`` is an int, ``true`` a bool, ``[1,2]`` a list)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ReslabError(f"--set expects KEY=VALUE, got {item!r}")
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


@command("models", "list registered architectures")(_models_args)
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
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="architecture override, e.g. --set stride_in=3x3")


@command("info", "per-stage table of output shapes, parameters and multiply-adds")(_info_args)
def cmd_info(args: argparse.Namespace) -> int:
    from .models import create_model, get_model_entry, model_info

    overrides = parse_sets(args.set)
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    size = parse_size(args.input_size) if args.input_size else get_model_entry(args.model).input_size
    if args.input_size and len(args.input_size.replace("x", ",").split(",")) < 3:
        size = (get_model_entry(args.model).input_size[0], *size[1:])
    model = create_model(args.model, **overrides)
    print(model_info(model, size).table())
    return 0


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
