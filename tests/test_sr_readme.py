"""The README's super-resolution figures are the committed runs' (results/sr/): PSNR, SSIM, the gain
over bicubic, steps, wall time and seconds per step, and the same table in results/sr/README.md."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from reslab.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"VDSR": "vdsr", "EDSR baseline": "edsr_baseline_x2"}


def _records(name: str) -> dict:
    recs = read_metrics(ROOT / "results" / "sr" / name / "metrics.jsonl")
    steps = [r for r in recs if r.get("event") == "step"]
    validated = {r["step"] for r in recs if r.get("event") == "epoch"}
    per_step = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(steps, steps[1:])
                if not any(a["step"] < v <= b["step"] for v in validated)]  # windows without a validation
    return {"test": [r for r in recs if r.get("event") == "test"][-1], "end": [r for r in recs if r.get("event") == "end"][-1],
            "start": next(r for r in recs if r.get("event") == "start"), "s_per_step": statistics.median(per_step)}


def _rows(text: str, start: str) -> dict[str, list[str]]:
    block = text[text.index(start):]
    rows = {}
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


@pytest.mark.parametrize("doc, start", [("README.md", "| x2, Penn-Fudan test photos |"),
                                        ("results/sr/README.md", "| x2, Penn-Fudan test photos |")])
def test_sr_table_is_the_committed_runs(doc, start):
    text = (ROOT / doc).read_text()
    rows = _rows(text, start)
    runs = {label: _records(name) for label, name in RUNS.items()}
    bicubic = {r["test"]["bicubic"]["psnr"] for r in runs.values()}
    assert len({round(b, 6) for b in bicubic}) == 1  # the same test photos, the same LR images
    b = runs["EDSR baseline"]["test"]["bicubic"]
    assert rows["bicubic"][5:7] == [f"{b['psnr']:.2f}", f"{b['ssim']:.4f}"]
    for label, r in runs.items():
        t, end = r["test"], r["end"]
        minutes, seconds = divmod(round(end["wall_time"]), 60)
        assert rows[label][1:5] == [f"{r['start']['params']:,}", str(end["step"]), f"{minutes} min {seconds:02d} s",
                                    f"{r['s_per_step']:.1f}"], label
        assert rows[label][5:8] == [f"{t['psnr']:.2f}", f"{t['ssim']:.4f}", f"{t['gain_db']:+.2f}"], label
        assert t["n"] == 34 and t["scale"] == 2 and r["start"]["test"] == 34 and r["start"]["train"] == 122
