"""Helpers of scripts/mutation.sh, run in its temporary copy of the tree.

    prepare   drop test files that do not exist from [tool.mutmut]'s test selection (the copy's pyproject.toml)
    report    read mutmut's results (mutants/**/*.meta) and the recipe mutants, write benchmarks/results/mutation.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import tomllib

# Surviving mutants judged equivalent (no observable difference, or a difference in something no
# user reads), with the reason. Keyed by mutmut's mutant name; the report checks each still exists.
T = "reslab.data.transforms."
EQUIVALENT: dict[str, str] = {
    T + "x_scaled_views__mutmut_19": "always interpolates, also at scale 1: bilinear interpolation to the same size returns the "
                                     "input exactly (align_corners=False samples the pixel centres), only slower",
    T + "x_scaled_views__mutmut_25": "align_corners=None: F.interpolate's default for bilinear is False (checked: equal outputs)",
    T + "x_scaled_views__mutmut_29": "align_corners dropped: the default is False, as given",
    T + "x_pil_to_uint8__mutmut_3": "dtype=None: every caller passes 'L' or 'RGB' images (decode.open_image and LoadedRun.preprocess "
                                    "convert first), whose arrays are uint8 already; other modes never reach it",
    T + "x_pil_to_uint8__mutmut_5": "dtype dropped: as mutmut_3",
    T + "xǁScaleAugmentǁ__call____mutmut_48": "flip when random() <= 0.5 instead of < 0.5: differs only when random() returns "
                                               "exactly 0.5 (probability 2**-53)",
    T + "x_resize_center_crop__mutmut_3": "min over (C, H, W) instead of (H, W): at worst resizes an image that already has the "
                                          "size, which torchvision's resize returns unchanged (checked), only slower",
    T + "x_resize_center_crop__mutmut_11": "antialias dropped: torchvision.transforms.v2.functional.resize defaults to antialias=True",
    "reslab.evaluate.x__file_batches__mutmut_47": "num_workers dropped (0: decode in the main process): the same views and "
                                                  "scores, only slower",
}

# Survivors that are not equivalent but that no test can kill on this machine (no accelerator).
NOT_KILLABLE_HERE: dict[str, str] = {
    f"reslab.evaluate.x__file_batches__mutmut_{i}": "tensor.to(None) is a no-op: on the CPU the tensors are already on the "
                                                      "device; with a CUDA device the labels/images would stay on the CPU and "
                                                      "evaluate would fail. Needs a GPU test (none on the test machine)"
    for i in (53, 57, 69)
}

STATUSES = ("killed", "survived", "no_tests", "timeout", "suspicious", "skipped")


def prepare() -> None:
    path = Path("pyproject.toml")
    text = path.read_text()
    selection = tomllib.loads(text)["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    for arg in selection:
        if arg.startswith("tests/") and not Path(arg.split("::")[0]).exists():
            print(f"note: {arg} does not exist; left out of the test selection")
            text = re.sub(rf'\n\s*"{re.escape(arg)}",', "", text)
    path.write_text(text)


def _status(code) -> str:
    from mutmut.stats import status_by_exit_code

    s = status_by_exit_code[code]
    return {"no tests": "no_tests", "segfault": "suspicious", "caught by type check": "killed"}.get(s, s)


def _diff(name: str, path: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(name, path=path).splitlines()
    return " | ".join(l.strip() for l in lines if l[:1] in "+-" and not l.startswith(("+++", "---")))


def _counts(statuses: list[str]) -> dict[str, int]:
    c = Counter(statuses)
    unknown = set(c) - set(STATUSES)
    if unknown:
        raise SystemExit(f"mutants not run to the end: {dict(c)}")
    return {"mutants": len(statuses), **{s: c[s] for s in STATUSES}}


def _ratio(counts: dict[str, int], minus: int = 0) -> float:
    tested = counts["mutants"] - counts["skipped"] - minus
    return round((counts["killed"] + counts["timeout"]) / tested, 4) if tested else 0.0


def report(a) -> None:
    import mutmut
    from mutmut.utils.file_utils import walk_mutatable_files

    modules, survivors = {}, []
    for path in sorted(map(str, walk_mutatable_files())):
        meta = Path("mutants") / (path + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        statuses = {name: _status(code) for name, code in codes.items()}
        modules[path] = _counts(list(statuses.values()))
        survivors += [(name, path, s) for name, s in statuses.items() if s in ("survived", "no_tests", "suspicious")]
    recipes = json.loads(Path(a.recipes).read_text()) if a.recipes else []
    if recipes:
        modules["src/reslab/recipes/*.yaml"] = _counts([r["status"] for r in recipes])
    total = {k: sum(m[k] for m in modules.values()) for k in ("mutants", *STATUSES)}

    out = Path(a.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    if a.label == "before":
        old["before"] = {"date": str(date.today()), "modules": modules, "total": total, "killed_ratio": _ratio(total),
                         "survivors": [{"mutant": n, "status": s, "diff": _diff(n, p)} for n, p, s in survivors]}
        doc = old
    else:
        equivalent, remaining = [], []
        for name, path, status in survivors:
            entry = {"mutant": name, "status": status, "diff": _diff(name, path)}
            if name in EQUIVALENT:
                equivalent.append({**entry, "why": EQUIVALENT[name]})
            else:
                remaining.append({**entry, **({"why": NOT_KILLABLE_HERE[name]} if name in NOT_KILLABLE_HERE else {})})
        remaining += [{"mutant": r["mutant"], "status": r["status"]} for r in recipes if r["status"] != "killed"]
        stale = sorted(set(EQUIVALENT) - {e["mutant"] for e in equivalent})
        if stale:
            print(f"note: listed as equivalent but no longer surviving (or renamed): {stale}", file=sys.stderr)
        doc = {
            "tool": "mutmut",
            "version": mutmut.__version__,
            "modules": modules,
            "total": total,
            "killed_ratio": _ratio(total),
            "killed_ratio_without_equivalent": _ratio(total, len(equivalent)),
            "ratio_definition": "(killed + timeout) / (mutants - skipped); 'no_tests' (no selected test runs the code) "
                                "counts as not killed; the recipes are mutated by scripts/recipe_mutants.py",
            "survivors_equivalent": equivalent,
            "survivors_remaining": remaining,
            "before": old.get("before"),
            "date": str(date.today()),
            "command": "scripts/mutation.sh",
            "test_selection": tomllib.loads(Path("pyproject.toml").read_text())["tool"]["mutmut"]["pytest_add_cli_args_test_selection"],
            "seconds": a.seconds,
            "jobs": a.jobs,
        }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{a.label}: {total['mutants']} mutants, {total['killed']} killed, {total['timeout']} timeout, "
          f"{total['survived']} survived, {total['no_tests']} no tests -> {out}")
    for path, m in modules.items():
        print(f"  {path}: {m}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare")
    r = sub.add_parser("report")
    r.add_argument("--label", choices=["before", "after"], default="after")
    r.add_argument("--recipes")
    r.add_argument("--out", required=True)
    r.add_argument("--seconds", type=int)
    r.add_argument("--jobs", type=int)
    a = ap.parse_args()
    prepare() if a.cmd == "prepare" else report(a)


if __name__ == "__main__":
    main()
