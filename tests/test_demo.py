"""`reslab demo`, the main job: offline, plain vs residual side by side."""

import json

from reslab.cli import main


def test_demo_trains_both_nets_offline_and_reuses_finished_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "no-data-here"))  # nothing but the package's data
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "plain20" in printed and "resnet20" in printed and "report:" in printed
    for name in ("plain20", "resnet20"):
        lines = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["event"] == "end" and lines[-1]["status"] == "finished"
        assert any(r["event"] == "test" for r in lines)
    report = (out / "report.md").read_text()
    assert "plain20" in report and "resnet20" in report and (out / "plots" / "compare.png").is_file()
    mtime = (out / "resnet20" / "metrics.jsonl").stat().st_mtime
    assert main(["demo", "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 0  # reuses both runs
    assert (out / "resnet20" / "metrics.jsonl").stat().st_mtime == mtime
