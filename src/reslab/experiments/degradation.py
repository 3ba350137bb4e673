"""The degradation experiment (He et al. 2015, Sec. 4.2, Figure 6): plain nets get worse with
depth, their residual twins get better.

Plain and residual CIFAR nets of 20, 32, 44 and 56 layers (110 with the full budget), the same
layers except for the shortcuts. The figure sets training error (thin dashed) and validation
error (bold) per iteration side by side: plain nets left, ResNets right.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import rundir
from ..plots import plot_error_vs_depth
from . import paper
from .base import Analysis, ExperimentDef, Finding, Net, NetResult, Summary, fmt_stat, md_table
from .budgets import Budget

PLAIN, RESNET = "plain", "ResNet"


def nets(depths: Sequence[int]) -> list[Net]:
    return ([Net(f"plain{d}", f"plain{d}", PLAIN, d) for d in depths]
            + [Net(f"resnet{d}", f"resnet{d}", RESNET, d) for d in depths])


def default_depths(budget: Budget) -> tuple[int, ...]:
    return (20, 32, 44, 56, 110) if budget.name == "full" else (20, 32, 44, 56)


def _compare(deep: NetResult, shallow: NetResult, key: str, above: bool, claim: str) -> Finding:
    a, b = deep.stat(key), shallow.stat(key)
    if a.mean is None or b.mean is None:
        return Finding(claim, None, "a run is missing or unfinished")
    held = a.mean > b.mean if above else a.mean < b.mean
    what = key.replace("_err", "")
    detail = f"{deep.net.name} {fmt_stat(a)} % vs {shallow.net.name} {fmt_stat(b)} % {what} error"
    if a.std is not None and b.std is not None and abs(a.mean - b.mean) < max(a.std, b.std):
        detail += "; the gap is within one seed std"
    return Finding(claim, held, detail)


def _throughout(summary: Summary, deep: NetResult, shallow: NetResult, above: bool) -> str:
    """On how many of the epochs logged by both first runs the training-error order held."""
    if not deep.runs or not shallow.runs:
        return ""
    try:
        d = {e["epoch"]: e.get("train_err") for e in rundir.read_run(summary.exp_dir / deep.runs[0].path).epochs}
        s = {e["epoch"]: e.get("train_err") for e in rundir.read_run(summary.exp_dir / shallow.runs[0].path).epochs}
    except Exception:  # an unreadable run is reported elsewhere
        return ""
    common = [k for k in d if k in s and d[k] is not None and s[k] is not None]
    if not common:
        return ""
    n = sum((d[k] > s[k]) if above else (d[k] < s[k]) for k in common)
    return f"; {'above' if above else 'below'} at {n} of the {len(common)} epochs"


def _family(summary: Summary, group: str) -> list[NetResult]:
    return sorted((n for n in summary.nets if n.net.group == group), key=lambda n: n.net.depth)


def analyse(summary: Summary) -> Analysis:
    plain, res = _family(summary, PLAIN), _family(summary, RESNET)
    findings: list[Finding] = []
    halves: dict[bool, Finding] = {}  # the training-error claim of each half of Figure 6
    tests: dict[bool, Finding] = {}  # and its test-error claim
    for family, above, words in ((plain, True, "above"), (res, False, "below")):
        if len(family) < 2:
            name = "plain" if family is plain else "resnet"
            halves[above] = Finding(f"deeper {name} nets: training error {words} the shallowest's", None,
                                    "needs at least two depths")
            findings.append(halves[above])
            continue
        deep, shallow = family[-1], family[0]
        f = _compare(deep, shallow, "train_err", above,
                     f"{deep.net.name} training error {words} {shallow.net.name}'s (paper: yes)")
        f.detail += _throughout(summary, deep, shallow, above)
        halves[above] = f
        findings.append(f)
        tests[above] = _compare(deep, shallow, "test_err", above,
                                f"{deep.net.name} test error {words} {shallow.net.name}'s (paper: yes)")
        findings.append(tests[above])
        means = [n.stat("train_err").mean for n in family]
        if len(family) > 2 and None not in means:
            ordered = all((x < y) if above else (x > y) for x, y in zip(means, means[1:]))
            findings.append(Finding(
                f"{'plain' if above else 'ResNet'} training error {'rises' if above else 'falls'} at every step in "
                f"depth (paper: {'yes' if above else 'yes, 20 to 110'})", ordered,
                ", ".join(f"{n.net.depth}: {m:.2f} %" for n, m in zip(family, means))))
    twins = [(p, r) for p in plain for r in res if p.net.depth == r.net.depth]
    pairs = [(p, r) for p, r in twins if p.stat("train_err").mean is not None and r.stat("train_err").mean is not None]
    if pairs:
        below = [r.stat("train_err").mean < p.stat("train_err").mean for p, r in pairs]
        findings.append(Finding("the ResNet has lower training error than its plain twin at every depth (paper: yes)",
                                all(below), ", ".join(f"{r.net.depth}: {r.stat('train_err').mean:.2f} vs "
                                                      f"{p.stat('train_err').mean:.2f} %" for p, r in pairs)))

    rows = []
    for n in plain + res:
        ref = paper.TABLE6_TEST_ERR.get(n.net.depth) if n.net.group == RESNET else None
        rows.append([f"`{n.net.name}`", n.net.depth, f"{n.params / 1e6:.3f}M" if n.params else "—",
                     fmt_stat(n.stat("train_err")), fmt_stat(n.stat("val_err")), fmt_stat(n.stat("test_err")),
                     f"{ref:.2f}" if ref is not None else "— (Fig. 6 only)"])
    table = md_table(["net", "depth", "params", "final train err (%)", "best val err (%)", "test err (%)",
                      "paper test err (%)"], rows, "lrrrrrr")
    table += ("\n\nThe paper's test errors are Table 6's (ResNets, option A, 64k iterations on all 50k training "
              "images); for plain nets it gives only Figure 6, where deeper means higher error. Training error is "
              "the running error over the last epoch (with augmentation), as in the paper's curves.")

    depth_plot = summary.exp_dir / "plots" / "error_vs_depth.png"
    colours = {PLAIN: "tab:red", RESNET: "tab:blue"}
    lines = []
    for group, family in ((PLAIN, plain), (RESNET, res)):
        for key, dashed in (("train_err", True), ("test_err", False)):
            pts = [(n.net.depth, n.stat(key)) for n in family if n.stat(key).mean is not None]
            lines.append({"label": f"{group} {'train' if dashed else 'test'}", "depths": [d for d, _ in pts],
                          "means": [s.mean for _, s in pts], "stds": [s.std for _, s in pts], "dashed": dashed,
                          "colour": colours[group]})
    depths = [n.net.depth for n in res]
    plot_error_vs_depth(lines, depth_plot, title="Final error against depth (dashed: training, solid: test)",
                        paper={"paper ResNet test (Table 6)": {d: paper.TABLE6_TEST_ERR[d] for d in depths
                                                               if d in paper.TABLE6_TEST_ERR}})
    groups = {"plain networks (Fig. 6 left)": summary.seed0_runs(plain),
              "ResNets (Fig. 6 right)": summary.seed0_runs(res)}
    sections = [("Final error against depth", "![Final error against depth](plots/error_vs_depth.png)\n\n"
                 "Dashed: final training error; solid: test error; grey crosses: the paper's ResNet test errors "
                 "(Table 6). Error bars: one std over seeds.")]
    return Analysis(findings, table, groups, sections,
                    paper={"table6_test_err": {str(d): e for d, e in paper.TABLE6_TEST_ERR.items() if d in depths},
                           "fig6": [paper.FIG6_PLAIN, paper.FIG6_RESNET]},
                    verdict=_verdict(summary, halves[True], halves[False], tests.get(False)))


def _verdict(summary: Summary, plain: Finding, res: Finding, res_test: Finding | None = None) -> str:
    budget = summary.meta.get("budget")
    if plain.held is None or res.held is None:
        return "not every half of Figure 6 could be tested yet (a family has fewer than two finished depths)."
    if plain.held and res.held:
        tail = ""
        if res_test is not None and res_test.held is False:
            n = (summary.meta.get("data_counts") or {}).get("train")
            images = f"{n:,} training images" if isinstance(n, int) else "training images"
            tail = (f" The deeper ResNet's test error is not lower, though ({res_test.detail}): it fits the "
                    f"{images} better but does not "
                    "generalise better from them; the paper's test-error gain comes with 50k images and 64k iterations.")
        return (f"both halves of Figure 6 show at the `{budget}` budget: the deeper plain net trains worse than the "
                "shallower one (degradation), and the deeper ResNet trains better." + tail)
    steps = max((r.steps for n in summary.nets for r in n.runs), default=0)
    parts = [("the plain half shows: the deeper plain net trains worse than the shallower one (degradation)"
              if plain.held else "the plain half does not show: the deeper plain net does not train worse"),
             ("the residual half shows: the deeper ResNet trains better" if res.held else
              "the residual half does not show: the deeper ResNet has not overtaken the shallower one yet")]
    return (f"degradation does not fully show at the `{budget}` budget: {parts[0]}; {parts[1]}. Deeper nets start "
            f"slower, residual or not, and these runs stop after {steps:,} iterations where the paper trains for "
            f"64,000. {SHORT_BUDGET_NOTE}")


SHORT_BUDGET_NOTE = "Try a longer budget (`--budget cpu-90min`, or `--budget full` on a GPU)."


EXPERIMENT = ExperimentDef(
    name="degradation",
    title="Degradation: plain vs residual nets (He et al. 2015, Figure 6)",
    source="He et al. 2015, Sec. 4.2 and Figure 6 (CIFAR-10)",
    about=("Plain and residual nets of the same depths, identical but for the shortcuts (option A), trained with "
           "the same recipe. In the paper the plain nets' training error rises with depth (the degradation "
           "problem) while the ResNets' falls. Figure: thin dashed lines are training error, bold lines validation "
           "error, per iteration; plain nets left, ResNets right."),
    valid_depths=(20, 32, 44, 56, 110),
    default_depths=default_depths,
    nets=nets,
    analyse=analyse,
)
