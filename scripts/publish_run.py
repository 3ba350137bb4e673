"""Copy a run directory's record into results/ for committing: the config, metrics, environment,
evaluation JSON and figures (never the weights or the training state), with this machine's
absolute paths made relative to the repository, then re-render its report there.

    python scripts/publish_run.py RUN_DIR results/isbi2012/unet_resnet34
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from reslab.report import render_run_report

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("config.yaml", "metrics.jsonl", "env.json", "classes.json")


def relative(text: str, run_dir: Path, dest: Path) -> str:
    """``text`` with the repository's and its parent's absolute paths, and the source run's, made relative."""
    for prefix, short in ((f"{ROOT}/../", "../"), (f"{ROOT.parent}/", "../"), (f"{ROOT}/", ""),
                          (str(run_dir.resolve()), str(dest.relative_to(ROOT)) if dest.is_relative_to(ROOT) else dest.name)):
        text = text.replace(prefix, short)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("dest", type=Path)
    args = ap.parse_args()
    src, dest = args.run_dir, args.dest.resolve()
    (dest / "plots").mkdir(parents=True, exist_ok=True)
    names = [*TEXT, *(p.name for p in src.glob("eval-*.json"))]
    for name in names:
        if (src / name).is_file():
            (dest / name).write_text(relative((src / name).read_text(), src, dest))
    for png in (src / "plots").glob("*.png"):
        shutil.copyfile(png, dest / "plots" / png.name)
    print(render_run_report(dest))


if __name__ == "__main__":
    main()
