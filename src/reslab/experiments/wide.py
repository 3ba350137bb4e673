"""Wide vs deep (Zagoruyko & Komodakis 2016, "Wide Residual Networks", Table 4): WRN-16-8, a
16-layer pre-activation ResNet eight times wider, against the 110-layer thin ResNet of He et al.

The wide net has 6.5x the parameters but 7x fewer layers, so it runs far more in parallel per
layer. The paper: WRN-16-8 4.81 % CIFAR-10 test error (11.0M parameters) against ResNet-110's
6.43 % (1.7M). Here both train on the same budget; the report sets error beside parameters and
training time.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Analysis, ExperimentDef, Finding, Net, Summary, fmt_stat, md_table
from .budgets import Budget

PAPER_TEST_ERR = {"wrn16_8": 4.81, "resnet110": 6.43}
"""CIFAR-10 test error (%): WRN-16-8 from Zagoruyko & Komodakis 2016 (Table 4), ResNet-110 from He et al. 2015
(Table 6, best of 5)."""
PAPER_PARAMS_M = {"wrn16_8": 11.0, "resnet110": 1.7}

_NETS = {16: Net("wrn16_8", "wrn16_8", "wide", 16), 110: Net("resnet110", "resnet110", "deep", 110)}


def nets(depths: Sequence[int]) -> list[Net]:
    return [_NETS[d] for d in depths]


def default_depths(budget: Budget) -> tuple[int, ...]:
    return (16, 110)


def analyse(summary: Summary) -> Analysis:
    by = summary.by_name()
    rows = []
    for n in summary.nets:
        wall = [r.wall_time for r in n.runs if r.wall_time]
        steps = [r.steps for r in n.runs if r.steps]
        rows.append([f"`{n.net.name}`", n.net.depth, f"{n.params / 1e6:.2f}M" if n.params else "—",
                     f"{PAPER_PARAMS_M[n.net.name]}M", fmt_stat(n.stat("train_err")), fmt_stat(n.stat("test_err")),
                     f"{PAPER_TEST_ERR[n.net.name]:.2f}", f"{sum(wall) / len(wall):.0f} s" if wall else "—",
                     f"{sum(wall) / sum(steps) * 1000:.0f} ms" if wall and steps else "—"])
    table = md_table(["net", "depth", "params", "paper params", "final train err (%)", "test err (%)",
                      "paper test err (%)", "training time", "per iteration"], rows, "lrrrrrrrr")
    findings: list[Finding] = []
    if "wrn16_8" in by and "resnet110" in by:
        w, d = by["wrn16_8"], by["resnet110"]
        we, de = w.stat("test_err").mean, d.stat("test_err").mean
        findings.append(Finding("WRN-16-8 tests better than ResNet-110 (paper: yes, 4.81 % vs 6.43 %)",
                                None if we is None or de is None else we < de,
                                "a run is missing or unfinished" if we is None or de is None else f"{we:.2f} % vs {de:.2f} %"))
        wt = [r.wall_time for r in w.runs if r.wall_time]
        dt = [r.wall_time for r in d.runs if r.wall_time]
        if wt and dt and w.params and d.params:
            findings.append(Finding("the wide net trains in less time than the deep one despite its parameters "
                                    "(paper: wide nets are faster to train)", sum(wt) / len(wt) < sum(dt) / len(dt),
                                    f"{sum(wt) / len(wt):.0f} s vs {sum(dt) / len(dt):.0f} s for the same iterations, "
                                    f"{w.params / d.params:.1f}x the parameters"))
    else:
        findings.append(Finding("WRN-16-8 tests better than ResNet-110", None, "needs both nets"))
    groups = {"wide vs deep": summary.seed0_runs(summary.nets)}
    return Analysis(findings, table, groups, [], paper={"test_err": PAPER_TEST_ERR, "params_m": PAPER_PARAMS_M})


EXPERIMENT = ExperimentDef(
    name="wide-vs-deep",
    title="Wide vs deep: WRN-16-8 against ResNet-110 (Zagoruyko & Komodakis 2016)",
    source="Zagoruyko & Komodakis 2016, Table 4, and He et al. 2015, Table 6 (CIFAR-10)",
    about=("A 16-layer pre-activation ResNet eight times wider (WRN-16-8) and the 110-layer thin ResNet, the same "
           "recipe and budget for both: test error beside parameters and training time."),
    valid_depths=(16, 110),
    default_depths=default_depths,
    nets=nets,
    analyse=analyse,
)
