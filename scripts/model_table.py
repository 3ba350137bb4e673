"""Regenerate the README's table of every registered model: parameters and multiply-adds measured
at each model's native input size, and its source paper.

    python scripts/model_table.py          # rewrites the block between the markers in README.md
    python scripts/model_table.py --check  # exit 1 (README untouched) if the block is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

import reslab
from reslab.models import get_model_entry

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"


def table() -> str:
    rows = ["| model | family | input | params | multiply-adds | paper |", "|---|---|---|---:|---:|---|"]
    for name in reslab.list_models():
        entry = get_model_entry(name)
        # A detector's multiply-adds depend on how many boxes its random weights keep (Mask R-CNN's
        # mask head runs on each detection): a fixed seed makes the table reproducible.
        torch.manual_seed(0)
        with torch.no_grad():
            info = reslab.model_info(reslab.create_model(name), entry.input_size)
        size = "x".join(map(str, entry.input_size))
        macs = f"{info.macs / 1e9:.3f}G" if info.macs >= 1e8 else f"{info.macs / 1e6:.2f}M"
        params = f"{info.params / 1e6:.2f}M" if info.params >= 1e5 else f"{info.params / 1e3:.1f}K"
        rows.append(f"| {name} | {entry.family} | {size} | {params} | {macs} | {entry.paper} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    if START not in text:
        print(f"README.md has no {START} marker", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + ".*?" + re.escape(END), f"{START}\n{table()}\n{END}", text, flags=re.S)
    if check:
        if new != text:
            print(f"{readme}'s model table is out of date: run python scripts/model_table.py", file=sys.stderr)
            return 1
        print(f"{readme}'s model table is up to date")
        return 0
    readme.write_text(new)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
