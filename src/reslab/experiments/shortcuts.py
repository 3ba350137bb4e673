"""Shortcut options A, B, C (He et al. 2015, Sec. 3.3 / 4.1, Table 3) on CIFAR-scale ResNets.

A: zero-padding identity shortcuts (no parameters); B: projections where the dimensions change,
identity elsewhere; C: projections everywhere. The paper compares them on ImageNet (ResNet-34,
Table 3) and finds C marginally better than B, B slightly better than A, with differences small
enough that projections are not what solves degradation. Here: resnet20/32/56 on CIFAR-10.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from . import paper
from .base import Analysis, ExperimentDef, Finding, Net, NetResult, Summary, fmt_stat, md_table
from .budgets import Budget

OPTIONS = ("A", "B", "C")


def nets(depths: Sequence[int]) -> list[Net]:
    return [Net(f"resnet{d}-{o}", f"resnet{d}", f"option {o}", d, {"shortcut": o}) for d in depths for o in OPTIONS]


def default_depths(budget: Budget) -> tuple[int, ...]:
    return (20, 32, 56)


def _option(n: NetResult) -> str:
    return str(n.net.model_args.get("shortcut", "A"))


def analyse(summary: Summary) -> Analysis:
    by_depth: dict[int, dict[str, NetResult]] = {}
    for n in summary.nets:
        by_depth.setdefault(n.net.depth, {})[_option(n)] = n
    findings: list[Finding] = []
    rows = []
    for depth in sorted(by_depth):
        opts = by_depth[depth]
        for o in OPTIONS:
            if o in opts:
                n = opts[o]
                rows.append([f"`resnet{depth}`", o, f"{n.params:,}" if n.params else "—", fmt_stat(n.stat("train_err")),
                             fmt_stat(n.stat("val_err")), fmt_stat(n.stat("test_err")), f"{paper.TABLE3_TOP1_ERR[o]:.2f}"])
        errs = {o: opts[o].stat("test_err").mean for o in OPTIONS if o in opts}
        params = {o: opts[o].params for o in OPTIONS if o in opts}
        if len(errs) == 3 and None not in errs.values():
            order = errs["A"] >= errs["B"] >= errs["C"]
            detail = ", ".join(f"{o} {fmt_stat(opts[o].stat('test_err'))} %" for o in OPTIONS)
            findings.append(Finding(f"resnet{depth}: test error A ≥ B ≥ C (paper, ImageNet ResNet-34: 25.03 > 24.52 > 24.19)",
                                    order, detail))
            known = cast("dict[str, float]", errs)  # no None: checked above
            spread = max(known.values()) - min(known.values())
            findings.append(Finding(f"resnet{depth}: the three options differ little, under 1 point (paper: 0.84 points)",
                                    spread < 1.0, f"spread {spread:.2f} points"))
        else:
            findings.append(Finding(f"resnet{depth}: test error A ≥ B ≥ C", None, "a run is missing or unfinished"))
        if len(params) == 3 and None not in params.values():
            findings.append(Finding(f"resnet{depth}: parameters A < B < C (B adds projections where dimensions change, "
                                    "C everywhere)", params["A"] < params["B"] < params["C"],
                                    ", ".join(f"{o} {params[o]:,}" for o in OPTIONS)))
    table = md_table(["net", "option", "params", "final train err (%)", "best val err (%)", "test err (%)",
                      "paper top-1 err (%), ImageNet ResNet-34"], rows, "llrrrrr")
    table += ("\n\nThe paper compares the options only on ImageNet (Table 3, 10-crop validation top-1 error of "
              "ResNet-34); its CIFAR nets all use option A. We compare their order and spread, not their values.")
    groups = {f"option {o}": summary.seed0_runs([n for n in summary.nets if _option(n) == o]) for o in OPTIONS}
    return Analysis(findings, table, groups, [],
                    paper={"table3_top1_err": dict(paper.TABLE3_TOP1_ERR), "table3_top5_err": dict(paper.TABLE3_TOP5_ERR)})


EXPERIMENT = ExperimentDef(
    name="shortcuts",
    title="Shortcut options A, B, C (He et al. 2015, Table 3, on CIFAR-scale ResNets)",
    source="He et al. 2015, Sec. 3.3 and 4.1, Table 3",
    about=("The same ResNets with zero-padding identity shortcuts (A), projections only where the dimensions change "
           "(B) and projections everywhere (C). The paper finds A < B < C in accuracy with small differences, so "
           "projection shortcuts are not essential to address degradation. Figure: one panel per option."),
    valid_depths=(20, 32, 44, 56, 110, 1202),
    default_depths=default_depths,
    nets=nets,
    analyse=analyse,
)
