"""The README's "Why residual nets train" figures are the committed analyses in results/analysis/."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _flat(text):
    return " ".join(text.split())


@pytest.fixture(scope="module")
def section():
    text = (ROOT / "README.md").read_text()
    i = text.index("## Why residual nets train")
    return _flat(text[i:text.index("\n## ", i + 10)])


def _findings(name):
    return json.loads((ROOT / "results" / "analysis" / name / "analysis.json").read_text())["findings"]


def test_gradient_figures(section):
    f = _findings("gradients-init")
    for pair in ("plain56 is 314x resnet56 (958 vs 3.05)", "plain110 is 2.47e+05x resnet110 (2.45e+06 vs 9.92)"):
        assert pair in section and any(pair in x for x in f)
    ratios = next(x for x in f if x.startswith("first-conv / classifier"))
    for net, value in (("plain20", "5.88"), ("plain56", "1.48e+03"), ("plain110", "3.46e+06"), ("resnet20", "0.281"),
                       ("resnet56", "0.455"), ("resnet110", "0.626"), ("preact_resnet110", "13.2")):
        assert f"{net} {value}" in ratios and value in section
    assert "5.88 → 1.48e+03 → 3.46e+06" in section and "0.281 → 0.455 → 0.626" in section


def test_shattering_figures(section):
    f = _findings("shattering-init")
    corr = next(x for x in f if x.startswith("correlation between the gradients"))
    quoted = "plain20 0.701, plain56 -0.00219, plain110 -0.00117, resnet20 0.943, resnet56 0.851, resnet110 0.723"
    assert quoted in corr and quoted in section
    acf = next(x for x in f if x.startswith("gradient autocorrelation at lag 1"))
    assert "plain20 0.451, plain56 0.0353, plain110 -0.0343, resnet20 0.875, resnet56 0.724, resnet110 0.451" in acf
    assert "(white noise -0.0529)" in acf and "white noise -0.0529" in section


def test_paths_figures(section):
    f = " ".join(_findings("paths-init"))
    assert "resnet110 (54 blocks, 2^54 paths): 95% of paths have length 20-34" in f
    assert "comes from paths of length 12-22, peaking at 16" in f
    assert "95% of them of length 20-34, but 90% of the gradient comes from paths of length 12-22, peaking at 16" in section
    assert "resnet56 (27 blocks, 2^27 paths): 95% of paths have length 8-18" in f and "gradient 6-14" in section
    assert "90% of the gradient (init weights) comes from paths of length 6-14" in f


def test_trained_net_figures(section):
    lesion = json.loads((ROOT / "results" / "analysis" / "lesion-embedded" / "analysis.json").read_text())
    m = {x["label"]: x for x in lesion["measurements"].values()}
    r, p = m["analysis-resnet20"], m["analysis-plain20"]
    assert f"{r['error']:.3g} % intact" in section
    assert f"{min(r['single']):.3g}-{max(r['single']):.3g} %" in section and r["single"][0] == max(r["single"])
    means = {k: sum(v) / len(v) for k, v in r["random"].items()}
    for k in ("1", "3", "9"):
        assert f"{means[k]:.3g} %" in section
    assert set(p["single"]) == {90.0} and "gives 90 %, chance" in section
    f = " ".join(_findings("blocks-embedded")) + " ".join(_findings("landscape-embedded"))
    for quoted in ("median ||F(x)||/||x|| over 9 blocks is 0.754 (block 7 lowest, 0.434; block 1 highest, 1.44)",
                   "loss 0.689 at the centre, 25.4 / 24.5 at alpha = -1 / 1; the centre is the minimum of the line",
                   "loss 0.743 at the centre, 33.7 / 2.83 at alpha = -1 / 1; the centre is the minimum of the line",
                   "|lambda_min / lambda_max| = 4.41e-06", "|lambda_min / lambda_max| = 6.09e-06"):
        assert quoted in f
    for quoted in ("is 0.754 (block 7 lowest, 0.434; block 1 highest, 1.44)", "25.4 / 24.5", "33.7 / 2.83", "4.41e-06",
                   "6.09e-06"):
        assert quoted in section
    report = (ROOT / "results" / "analysis" / "report.md").read_text()
    assert "analysis-resnet20: Spearman rho = 0.45 between" in report and "Spearman rho = 0.45" in section
