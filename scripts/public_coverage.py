"""Public functions and classes (the names in ``__all__`` of reslab and of each of its modules)
that the tests never execute, and those no test file names (reached only through other code).

    python -m pytest -q -n 2 --cov=reslab --cov-report=json:coverage.json
    python scripts/public_coverage.py coverage.json
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import reslab

    files = json.loads(Path(sys.argv[1]).read_text())["files"]
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    modules = ["reslab"] + [m.name for m in pkgutil.walk_packages(reslab.__path__, "reslab.") if not m.name.endswith("__main__")]
    seen, never, unnamed, total = set(), [], [], 0
    for name in modules:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not obj.__module__.startswith("reslab"):
                continue
            obj = inspect.unwrap(obj)
            key = (obj.__module__, obj.__qualname__)
            if key in seen:
                continue
            seen.add(key)
            total += 1
            path = str(Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT))
            kind = "functions" if inspect.isfunction(obj) else "classes"
            summary = files.get(path, {}).get(kind, {}).get(obj.__qualname__, {}).get("summary")
            label = f"{obj.__module__}.{obj.__qualname__}"
            if summary is None or (summary["num_statements"] and not summary["covered_lines"]):
                never.append(label)
            elif not re.search(rf"\b{re.escape(public)}\b", tests):
                unnamed.append(label)
    print(f"{total} public functions and classes; never executed by the tests: {len(never)}")
    for n in never:
        print(f"  {n}")
    print(f"executed, but named in no test file (reached through other code; their results checked only there): {len(unnamed)}")
    for n in unnamed:
        print(f"  {n}")


if __name__ == "__main__":
    main()
