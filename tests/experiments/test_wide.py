"""reslab reproduce wide-vs-deep on the tiny budget: both nets trained, the table and findings."""
import json

from reslab.cli import main


def test_wide_vs_deep_trains_both_nets_and_reports_error_params_and_time(tmp_path, capsys):
    out = tmp_path / "wvd"
    assert main(["reproduce", "wide-vs-deep", "--budget", "tiny", "--data", "embedded", "--threads", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    nets = {n["name"]: n for n in results["nets"]}
    assert sorted(nets) == ["resnet110", "wrn16_8"]
    assert round(nets["wrn16_8"]["params"] / 1e6, 1) == 11.0  # Zagoruyko & Komodakis 2016, Table 4
    assert round(nets["resnet110"]["params"] / 1e6, 1) == 1.7  # He et al. 2015, Table 6
    claims = [f["claim"] for f in results["findings"]]
    assert claims[0].startswith("WRN-16-8 tests better than ResNet-110") and "WRN-16-8 tests better" in printed
    assert any(c.startswith("the wide net trains in less time") for c in claims)
    report = (out / "report.md").read_text()
    assert "| `wrn16_8` | 16 | 10.96M | 11.0M |" in report and "4.81" in report and "6.43" in report
    assert main(["reproduce", "wide-vs-deep", "--depths", "20", "--budget", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "--depths must be some of 16, 110" in capsys.readouterr().err


def test_readme_wide_vs_deep_figures_are_the_committed_results():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    text = " ".join((root / "README.md").read_text().split())
    results = json.loads((root / "results" / "wide-vs-deep-cpu5" / "results.json").read_text())
    nets = {n["name"]: n for n in results["nets"]}
    for name in ("wrn16_8", "resnet110"):
        n = nets[name]
        (run,) = n["runs"]
        row = f"| {name} | {n['params'] / 1e6:.2f}M | {n['test_err']['mean']:.2f} |"
        assert row in text, row
        assert f"| {run['wall_time']:.0f} |" in text
    w, d = nets["wrn16_8"]["runs"][0], nets["resnet110"]["runs"][0]
    assert f"each iteration takes {w['wall_time'] / w['steps'] / (d['wall_time'] / d['steps']):.1f}x as long" in text
    assert f"the same {w['steps']} iterations" in text and w["steps"] == d["steps"]
