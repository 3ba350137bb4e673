"""Mutants of the shipped recipes (YAML, which mutmut does not mutate).

For every top-level value of every recipe in src/reslab/recipes: change it (a number +1 or x2, a
boolean negated, a string to another valid choice, a list's last item changed), and drop its line;
for every recipe, add a key it does not set. Each mutant is written into a temporary copy of
src/ (never into this tree) and tests/test_recipes.py is run against that copy; a mutant is killed
when a test fails. Prints a summary and, with --json, writes the per-mutant results.

    python scripts/recipe_mutants.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# valid alternatives for string values (so that a mutant is a plausible wrong recipe, not a typo)
ALTERNATIVES = {
    "schedule": ["step", "cosine", "onecycle", "plateau", "constant"],
    "augment": ["pad_crop_flip", "scale_crop_flip", "flip", "none"],
    "normalize": ["per_pixel_mean", "per_channel", "none"],
    "test_protocol": ["center", "10crop", "multiscale"],
    "milestone_unit": ["iter", "epoch"],
    "data": ["cifar10", "cifar100", "mnist"],
}
ADDED = ("seed", "7")  # a key no recipe sets


def _fmt(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _changed(key: str, value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2
    if isinstance(value, str):
        choices = ALTERNATIVES.get(key, [])
        others = [c for c in choices if c != value]
        return others[0] if others else value + "x"
    if isinstance(value, list):
        return value[:-1] + [_changed(key, value[-1])]
    raise TypeError(f"{key}: no mutation for {type(value).__name__}")


def mutants(recipes: Path) -> list[dict]:
    """[{name, file, text}] : each the whole mutated YAML text of one recipe."""
    import yaml

    out = []
    for path in sorted(recipes.glob("*.yaml")):
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        data = yaml.safe_load(text)
        for i, line in enumerate(lines):
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key = line.split(":", 1)[0]
            if key not in data:
                continue
            new = _changed(key, data[key])
            changed = lines[:i] + [f"{key}: {_fmt(new)}\n"] + lines[i + 1:]
            assert yaml.safe_load("".join(changed))[key] == new
            out.append({"name": f"{path.stem}.{key}: {_fmt(data[key])} -> {_fmt(new)}", "file": path.name,
                        "text": "".join(changed)})
            out.append({"name": f"{path.stem}.{key}: dropped", "file": path.name, "text": "".join(lines[:i] + lines[i + 1:])})
        out.append({"name": f"{path.stem}: {ADDED[0]}: {ADDED[1]} added", "file": path.name,
                    "text": text.rstrip("\n") + f"\n{ADDED[0]}: {ADDED[1]}\n"})
    return out


def _worker(src: Path, tests: Path, spec: Path) -> None:
    """In a process whose reslab is the copy ``src``: run tests/test_recipes.py for each mutant."""
    import contextlib
    import io

    import pytest

    import reslab

    assert Path(reslab.__file__).resolve().is_relative_to(src.resolve()), f"reslab imported from {reslab.__file__}"
    todo = json.loads(spec.read_text())
    recipes = src / "reslab" / "recipes"
    originals = {p.name: p.read_text() for p in recipes.glob("*.yaml")}
    args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tests / "test_recipes.py")]

    def run() -> int:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return int(pytest.main(args))

    if run() != 0:
        raise SystemExit("tests/test_recipes.py fails on the unmutated recipes")
    results = []
    for m in todo:
        (recipes / m["file"]).write_text(m["text"])
        try:
            code = run()
        finally:
            (recipes / m["file"]).write_text(originals[m["file"]])
        results.append({"mutant": m["name"], "status": "killed" if code == 1 else "survived" if code == 0 else f"error {code}"})
    spec.write_text(json.dumps(results))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, help="a copy of src/ to mutate in place (default: a fresh temporary copy)")
    ap.add_argument("--tests", type=Path, default=ROOT / "tests")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        _worker(a.src, a.tests, a.worker)
        return
    with tempfile.TemporaryDirectory(prefix="reslab-recipes-") as tmp:
        src = a.src
        if src is None:
            src = Path(tmp) / "src"
            shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
            if not (a.tests.parent / "README.md").is_file():
                raise SystemExit("tests/test_recipes.py reads README.md next to tests/")
        todo = mutants(src / "reslab" / "recipes")
        spec = Path(tmp) / "mutants.json"
        spec.write_text(json.dumps(todo))
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--src", str(src), "--tests", str(a.tests), "--worker", str(spec)],
                       check=True, env=env, cwd=a.tests.parent)
        results = json.loads(spec.read_text())
    killed = sum(r["status"] == "killed" for r in results)
    print(f"recipes: {len(results)} mutants, {killed} killed")
    for r in results:
        if r["status"] != "killed":
            print(f"  {r['status']}: {r['mutant']}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
