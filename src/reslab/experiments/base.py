"""The shapes every training experiment shares: its nets as data, the results read back from its
runs, the findings, and ``experiment.json``."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ReslabError
from .budgets import Budget

__all__ = ["Net", "ExperimentDef", "Finding", "Stat", "RunResult", "NetResult", "Summary", "Analysis",
           "read_experiment", "now_iso", "md_table", "fmt_stat", "parse_depths", "check_seeds", "portable_command"]


@dataclass(frozen=True)
class Net:
    """One network of an experiment, trained once per seed.

    Args:
        name: the row name and run-directory stem, e.g. ``plain56`` or ``resnet20-B``.
        model: the registry name.
        group: the panel / family it belongs to, e.g. ``plain`` or ``option B``.
        depth: weighted layers, as the paper counts them.
        model_args: ``create_model`` overrides, e.g. ``{"shortcut": "B"}``.
    """

    name: str
    model: str
    group: str
    depth: int
    model_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Finding:
    """A qualitative claim of the paper and whether our runs show it (None: not testable here)."""

    claim: str
    held: bool | None
    detail: str

    def markdown(self) -> str:
        verdict = {True: "**yes**", False: "**no**", None: "**not tested**"}[self.held]
        return f"- {self.claim}: {verdict} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "held": self.held, "detail": self.detail}


@dataclass
class Stat:
    """Mean and sample std over seeds (std is None for one seed)."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return cls(None, None, 0)
        return cls(statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


def fmt_stat(s: Stat, spec: str = ".2f") -> str:
    """``8.12`` for one seed, ``8.12 ± 0.31`` for several, an em dash for none."""
    if s.mean is None:
        return "—"
    return format(s.mean, spec) + (f" ± {format(s.std, spec)}" if s.std is not None else "")


@dataclass
class RunResult:
    """One run's figures, read from its ``metrics.jsonl``."""

    name: str
    net: str
    seed: int
    path: str
    status: str
    params: int | None
    train_err: float | None  # the last epoch's training error (running error over that epoch)
    val_err: float | None  # the best validation error (model selection)
    final_val_err: float | None  # the last epoch's validation error
    test_err: float | None  # top-1 test error of the selected checkpoint
    epochs: int
    steps: int
    wall_time: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class NetResult:
    net: Net
    runs: list[RunResult]

    def stat(self, key: str) -> Stat:
        return Stat.of([getattr(r, key) for r in self.runs if r.status == "finished"])

    @property
    def params(self) -> int | None:
        return next((r.params for r in self.runs if r.params is not None), None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.net.name, "model": self.net.model, "model_args": dict(self.net.model_args),
                "group": self.net.group, "depth": self.net.depth, "params": self.params,
                **{k: self.stat(k).to_dict() for k in ("train_err", "val_err", "final_val_err", "test_err")},
                "runs": [r.to_dict() for r in self.runs]}


@dataclass
class Summary:
    """An experiment's nets with their results, and what ``experiment.json`` says."""

    exp_dir: Path
    meta: dict[str, Any]
    nets: list[NetResult]

    def by_name(self) -> dict[str, NetResult]:
        return {n.net.name: n for n in self.nets}

    def seed0_runs(self, nets: Sequence[NetResult]) -> list[Path]:
        """Each net's first run: the curves drawn in the figures (one per net keeps them legible)."""
        return [self.exp_dir / n.runs[0].path for n in nets if n.runs]


@dataclass
class Analysis:
    """What an experiment adds to the common report."""

    findings: list[Finding]
    table: str  # markdown: our numbers beside the paper's, placed before the findings
    groups: dict[str, list[Path]]  # figure panels
    sections: list[tuple[str, str]]  # (heading, markdown) after the figure
    paper: dict[str, Any]  # the paper's numbers used, for results.json
    verdict: str = ""  # a paragraph after the findings: what the findings add up to


@dataclass(frozen=True)
class ExperimentDef:
    """A training experiment as data.

    Args:
        name: the ``reslab reproduce`` name.
        title: the report heading.
        source: where in the paper it comes from.
        about: one paragraph for the report's introduction.
        valid_depths: the depths ``--depths`` may name.
        default_depths: the depths run when ``--depths`` is not given, per budget.
        nets: the nets for a list of depths.
        analyse: findings, figure panels and extra sections from the results.
    """

    name: str
    title: str
    source: str
    about: str
    valid_depths: tuple[int, ...]
    default_depths: Callable[[Budget], tuple[int, ...]]
    nets: Callable[[Sequence[int]], list[Net]]
    analyse: Callable[[Summary], Analysis]


# -- input checks -------------------------------------------------------------------------------------
def parse_depths(text: str | Sequence[int] | None, exp: ExperimentDef, budget: Budget) -> tuple[int, ...]:
    """``"20,32,56"`` -> (20, 32, 56), checked against the experiment's depths."""
    if text is None:
        return exp.default_depths(budget)
    valid = ", ".join(map(str, exp.valid_depths))
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    try:
        depths = [int(p) for p in items if p]
    except ValueError:
        raise ReslabError(f"--depths must be comma-separated integers such as 20,32,56; got {text!r}") from None
    if not depths:
        raise ReslabError(f"--depths is empty; give some of {valid}")
    bad = [d for d in depths if d not in exp.valid_depths]
    if bad:
        raise ReslabError(f"{exp.name} has no depth {', '.join(map(str, bad))}; --depths must be some of {valid}")
    if len(set(depths)) != len(depths):
        raise ReslabError(f"--depths names a depth twice: {text!r}")
    return tuple(sorted(depths))


def check_seeds(seeds: Any) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ReslabError(f"--seeds must be a positive integer (seeds per net), got {seeds!r}")
    return seeds


# -- experiment.json ----------------------------------------------------------------------------------

def read_experiment(exp_dir: Path) -> dict[str, Any]:
    path = Path(exp_dir) / "experiment.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReslabError(f"{exp_dir} is not an experiment directory (no experiment.json); give the --out of "
                          "'reslab reproduce'") from None
    except json.JSONDecodeError as e:
        raise ReslabError(f"{path} is not valid JSON ({e.msg}); restore it or rerun the experiment into a new --out") from None
    if not isinstance(meta, dict) or "experiment" not in meta:
        raise ReslabError(f"{path} does not describe an experiment (no 'experiment' key)")
    return meta



_ABS_ARG = re.compile(r"^(--[\w-]+=)?(\w+:)?(/.*)$")


def portable_command(command: str) -> str:
    """``command`` with each absolute path argument (``/abs/x``, ``--out=/abs/x``,
    ``imagefolder:/abs/x``) made relative to the working directory, so a recorded command names
    no directory of the machine it ran on and reruns from the same place."""
    try:
        args = shlex.split(command)
    except ValueError:
        return command
    out = []
    for arg in args:
        m = _ABS_ARG.match(arg)
        if m and os.path.isabs(m.group(3)):
            arg = f"{m.group(1) or ''}{m.group(2) or ''}{os.path.relpath(m.group(3))}"
        out.append(arg)
    return shlex.join(out)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in (headers, rule, *rows)]
    return "\n".join(lines)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
