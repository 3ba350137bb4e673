"""ResNets of growing depth on CIFAR-10 (He et al. 2015, Table 6): errors and parameters.

ResNet-20, 32, 44, 56, 110 (and 1202 with the full budget). In the paper the test error falls
from 8.75 % (20 layers) to 6.43 % (110 layers); the 1202-layer net still trains (training error
below 0.1 %) but tests worse, 7.93 %, which the authors put down to overfitting.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..plots import plot_error_vs_depth
from . import paper
from .base import Analysis, ExperimentDef, Finding, Net, Summary, fmt_stat, md_table
from .budgets import Budget


def nets(depths: Sequence[int]) -> list[Net]:
    return [Net(f"resnet{d}", f"resnet{d}", "ResNet", d) for d in depths]


def default_depths(budget: Budget) -> tuple[int, ...]:
    return (20, 32, 44, 56, 110, 1202) if budget.name == "full" else (20, 32, 44, 56)


def analyse(summary: Summary) -> Analysis:
    family = sorted(summary.nets, key=lambda n: n.net.depth)
    rows = []
    for n in family:
        d = n.net.depth
        ref_err, ref_params = paper.TABLE6_TEST_ERR.get(d), paper.TABLE6_PARAMS_M.get(d)
        rows.append([f"`{n.net.name}`", d, f"{n.params / 1e6:.3f}M" if n.params else "—",
                     f"{ref_params}M" if ref_params is not None else "—", fmt_stat(n.stat("train_err")),
                     fmt_stat(n.stat("val_err")), fmt_stat(n.stat("test_err")),
                     f"{ref_err:.2f}" if ref_err is not None else "—"])
    table = md_table(["net", "depth", "params", "paper params", "final train err (%)", "best val err (%)",
                      "test err (%)", "paper test err (%)"], rows, "lrrrrrrr")
    table += (f"\n\nPaper: Table 6, CIFAR-10 test error; ResNet-110 is the best of 5 runs (mean "
              f"{paper.TABLE6_RESNET110_MEAN_STD[0]} ± {paper.TABLE6_RESNET110_MEAN_STD[1]}).")

    findings: list[Finding] = []
    upto110 = [n for n in family if n.net.depth <= 110 and n.stat("test_err").mean is not None]
    if len(upto110) >= 2:
        errs = [n.stat("test_err").mean for n in upto110]
        findings.append(Finding(f"test error falls with every added depth from {upto110[0].net.depth} to "
                                f"{upto110[-1].net.depth} layers (paper: yes, 8.75 % to 6.43 % from 20 to 110)",
                                all(b <= a for a, b in zip(errs, errs[1:])),
                                ", ".join(f"{n.net.depth}: {e:.2f} %" for n, e in zip(upto110, errs))))
        findings.append(Finding(f"resnet{upto110[-1].net.depth} tests better than resnet{upto110[0].net.depth} "
                                "(paper: yes)", errs[-1] < errs[0], f"{errs[-1]:.2f} % vs {errs[0]:.2f} %"))
    else:
        findings.append(Finding("test error falls with depth up to 110 layers", None, "needs two finished depths"))
    by_depth = {n.net.depth: n for n in family}
    if 1202 in by_depth and 110 in by_depth:
        a, b = by_depth[1202].stat("test_err").mean, by_depth[110].stat("test_err").mean
        findings.append(Finding("resnet1202 tests worse than resnet110 (paper: yes, 7.93 % vs 6.43 %, overfitting)",
                                None if a is None or b is None else a > b,
                                "a run is missing or unfinished" if a is None or b is None else f"{a:.2f} % vs {b:.2f} %"))
    matches = [(n, paper.paper_params_match(n.net.depth, n.params)) for n in family]
    known = [(n, m) for n, m in matches if m is not None]
    if known:
        findings.append(Finding("parameter counts round to Table 6's", all(m for _, m in known),
                                ", ".join(f"{n.net.depth}: {n.params / 1e6:.3f}M vs {paper.TABLE6_PARAMS_M[n.net.depth]}M"
                                          for n, _ in known)))

    pts = [(n.net.depth, n.stat("test_err")) for n in family if n.stat("test_err").mean is not None]
    tr = [(n.net.depth, n.stat("train_err")) for n in family if n.stat("train_err").mean is not None]
    depths = [n.net.depth for n in family]
    plot_error_vs_depth(
        [{"label": "ours, train", "depths": [d for d, _ in tr], "means": [s.mean for _, s in tr],
          "stds": [s.std for _, s in tr], "dashed": True, "colour": "tab:blue"},
         {"label": "ours, test", "depths": [d for d, _ in pts], "means": [s.mean for _, s in pts],
          "stds": [s.std for _, s in pts], "dashed": False, "colour": "tab:blue"}],
        summary.exp_dir / "plots" / "error_vs_depth.png", title="ResNet error against depth (Table 6)",
        paper={"paper test (Table 6)": {d: paper.TABLE6_TEST_ERR[d] for d in depths if d in paper.TABLE6_TEST_ERR}})
    sections = [("Error against depth", "![Error against depth](plots/error_vs_depth.png)\n\n"
                 "Dashed: final training error; solid: test error; grey crosses: the paper's (Table 6). "
                 "Error bars: one std over seeds.")]
    groups = {"ResNets": summary.seed0_runs(family)}
    return Analysis(findings, table, groups, sections,
                    paper={"table6_test_err": {str(d): e for d, e in paper.TABLE6_TEST_ERR.items()},
                           "table6_params_m": {str(d): p for d, p in paper.TABLE6_PARAMS_M.items()},
                           "table6_resnet110_mean_std": list(paper.TABLE6_RESNET110_MEAN_STD)})


EXPERIMENT = ExperimentDef(
    name="depth",
    title="ResNet depth: errors and parameters (He et al. 2015, Table 6)",
    source="He et al. 2015, Sec. 4.2 and Table 6 (CIFAR-10)",
    about=("ResNets of growing depth (option A shortcuts), the same recipe for each. In the paper deeper is better "
           "up to 110 layers; 1202 layers still optimise but overfit."),
    valid_depths=(20, 32, 44, 56, 110, 1202),
    default_depths=default_depths,
    nets=nets,
    analyse=analyse,
)
