"""The README stays true: its model table lists exactly the registered models."""

import contextlib
import io
import json
import re
from pathlib import Path

import torch

import reslab

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_model_table_lists_every_registered_model():
    text = README.read_text()
    block = text.split("<!-- model-table:start -->")[1].split("<!-- model-table:end -->")[0]
    names = re.findall(r"^\| (\w+) \|", block, flags=re.M)
    names = [n for n in names if n != "model"]
    assert names == reslab.list_models(), "run: python scripts/model_table.py"


def test_readme_first_command_is_the_demo():
    commands = re.findall(r"^reslab \w+", README.read_text(), flags=re.M)
    assert commands[0] == "reslab demo"


# -- figures the README prints or quotes, regenerated or read back from committed results ------------
ROOT = README.parent


def _section(text, start, end):
    i = text.index(start)
    return text[i:text.index(end, i + len(start))]


def _flat(text):
    """Whitespace-insensitive: a reflowed paragraph reads the same."""
    return " ".join(text.split())


def test_readme_info_resnet50_block_is_what_the_command_prints():
    from reslab.cli import main

    text = README.read_text()
    block = _section(text, "`reslab info resnet50` prints:", "`--input-size` takes")
    printed_in_readme = block.split("```")[1].strip("\n")
    out = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 224x224 forward; two threads on a busy 2-core CPU wait on each other
    try:
        with contextlib.redirect_stdout(out):
            assert main(["info", "resnet50"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert printed_in_readme == out.getvalue().strip("\n")


def _results(name):
    return json.loads((ROOT / "results" / name / "results.json").read_text())


def _nets(results):
    return {net["name"]: net for net in results["nets"]}


def _pct(value):
    return f"{value:.2f}"


def _duration(seconds):
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def _table_rows(block, header):
    lines = block[block.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("*", "") for c in line.strip().strip("|").split("|")])
    return rows


def test_readme_degradation_cpu_figures_are_the_committed_results():
    text = README.read_text()
    block = _section(text, "### Committed results: degradation on a CPU", "The smallest preset")
    res = _results("degradation-cpu")
    nets = _nets(res)
    rows = _table_rows(block, "| depth | plain: train / test err (%)")
    assert [int(r[0]) for r in rows] == res["depths"] == [20, 32, 44, 56]
    for depth, plain, resnet, paper in rows:
        for cell, name in ((plain, f"plain{depth}"), (resnet, f"resnet{depth}")):
            train, test = (c.strip() for c in cell.split("/"))
            assert train == _pct(nets[name]["train_err"]["mean"]), name
            assert test == _pct(nets[name]["test_err"]["mean"]), name
        assert float(paper) == res["paper"]["table6_test_err"][depth]
    counts, settings = res["data_counts"], res["budget_settings"]
    steps = {run["steps"] for net in res["nets"] for run in net["runs"]}
    epochs = {run["epochs"] for net in res["nets"] for run in net["runs"]}
    assert steps == {624} and epochs == {16} and res["budget"] == "cpu-30min"
    prose = _flat(block)
    assert (f"the `cpu-30min` budget on the CIFAR-10 image folder ({counts['train']:,} training images, "
            f"{epochs.pop()} epochs = {steps.pop()} iterations, {counts['test']:,} test images)") in prose
    assert settings["train_size"] == counts["train"] and settings["test_size"] == counts["test"]
    assert f"2-core CPU in {_duration(res['wall_time']['elapsed'])}:" in prose
    lo, hi = round(nets["plain20"]["train_err"]["mean"]), round(nets["plain56"]["train_err"]["mean"])
    assert f"20 → 56 layers: {lo} → {hi} %" in prose
    assert "after 624 iterations" in prose
    # "every ResNet trains far better than its plain twin", "the deeper ResNets have not overtaken ResNet-20"
    for d in res["depths"]:
        assert nets[f"resnet{d}"]["train_err"]["mean"] < nets[f"plain{d}"]["train_err"]["mean"]
        assert d == 20 or nets[f"resnet{d}"]["train_err"]["mean"] > nets["resnet20"]["train_err"]["mean"]


def _epoch_train_errors(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["train_err"] for r in records if r["event"] == "epoch"]


def test_readme_degradation_cpu90_figures_are_the_committed_results():
    text = README.read_text()
    block = _section(text, "The smallest preset at which", "## The Python API")
    res = _results("degradation-cpu90")
    nets = _nets(res)
    rows = _table_rows(block, "| net | final train err (%) | test err (%) |")
    assert sorted(r[0] for r in rows) == sorted(nets) == ["plain20", "plain56", "resnet20", "resnet56"]
    for name, train, test in rows:
        assert train == _pct(nets[name]["train_err"]["mean"]), name
        assert test == _pct(nets[name]["test_err"]["mean"]), name
    steps = {run["steps"] for net in res["nets"] for run in net["runs"]}
    epochs = {run["epochs"] for net in res["nets"] for run in net["runs"]}
    assert steps == {1872} and epochs == {48} and res["budget"] == "cpu-90min" and res["depths"] == [20, 56]
    prose = _flat(block)
    assert ("(the same data, 48 epochs = 1,872 iterations), run for depths 20 and 56 in "
            f"{_duration(res['wall_time']['elapsed'])}:") in prose
    r20, r56 = nets["resnet20"]["test_err"]["mean"], nets["resnet56"]["test_err"]["mean"]
    assert f"({r56:.1f} vs {r20:.1f} %)" in prose
    # "it is ahead for good only from epoch 43 of 48, as the curves show"
    e20 = _epoch_train_errors(ROOT / "results" / "degradation-cpu90" / "runs" / "resnet20-seed0")
    e56 = _epoch_train_errors(ROOT / "results" / "degradation-cpu90" / "runs" / "resnet56-seed0")
    assert len(e20) == len(e56) == 48
    ahead = [b < a for a, b in zip(e20, e56)]
    first = next(i for i in range(48) if all(ahead[i:])) + 1
    assert f"from epoch {first} of {len(ahead)}" in prose
    assert e20[-1] == nets["resnet20"]["train_err"]["mean"] and e56[-1] == nets["resnet56"]["train_err"]["mean"]


def test_readme_responses_claims_are_the_committed_results():
    text = README.read_text()
    block = _flat(_section(text, "is Figure 7 measured on these runs", "The smallest preset"))
    res = _results("responses-cpu")
    std = {net["model"]: net["mean_std"] for net in res["nets"]}
    depths = [20, 32, 44, 56]
    assert sorted(std) == sorted([f"plain{d}" for d in depths] + [f"resnet{d}" for d in depths])
    assert "ResNets respond more weakly than their plain twins at every depth" in block
    assert all(std[f"resnet{d}"] < std[f"plain{d}"] for d in depths)
    assert "the deeper-is-smaller trend of the paper does not show" in block
    resnets = [std[f"resnet{d}"] for d in depths]
    assert resnets != sorted(resnets, reverse=True)
    findings = {f["claim"].split(" (")[0]: f["held"] for f in res["findings"]}
    assert findings == {"ResNets respond more weakly than their plain counterparts": True,
                        "the deeper the ResNet, the smaller its responses": False}


def test_committed_results_name_no_absolute_path():
    """results/ is read in other people's clones: no file may name a directory of the machine that
    produced it (paths are relative to the experiment directory, data as the user gave it)."""
    absolute = re.compile(r"(?<![\w.~-])/(?:work|home|tmp|root|Users|mnt|srv|scratch|private|var/folders)/"
                          r"|[A-Za-z]:\\\\")
    files = [f for f in (ROOT / "results").rglob("*") if f.suffix in (".md", ".html", ".json", ".jsonl", ".yaml")]
    assert len(files) > 40  # reports, experiment/results JSON, and each run's config and metrics
    bad = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files for m in [absolute.search(f.read_text())] if m]
    bad += [f"{f.relative_to(ROOT)}: the repository path" for f in files if str(ROOT) in f.read_text()]
    assert not bad, "\n".join(bad)


def test_readme_demo_figures_are_the_committed_results():
    from reslab.demo import DEFAULT_DEPTH, DEFAULT_EPOCHS

    text = README.read_text()
    prose = _flat(_section(text, "It trains plain-", "Run the checks and the tests"))
    res = _results("demo")
    assert (res["depth"], res["epochs"]) == (DEFAULT_DEPTH, DEFAULT_EPOCHS)
    d = res["depth"]
    assert f"It trains plain-{d} and ResNet-{d}" in prose and f"{res['epochs']} epochs each" in prose
    plain, resnet = res["printed"][f"plain{d}"], res["printed"][f"resnet{d}"]
    assert resnet["train_err"] < plain["train_err"]  # "the plain net ends with the higher training error"
    assert (f"training error {_pct(plain['train_err'])} vs {_pct(resnet['train_err'])} %, test error "
            f"{_pct(plain['test_err'])} vs {_pct(resnet['test_err'])} %") in prose
    runs = res["spread_runs"]
    for name in (f"plain{d}", f"resnet{d}"):
        train = [r["train_err"] for r in runs if r["run"].startswith(name)]
        assert f"{name} {min(train):.1f}-{max(train):.1f} %" in prose
    assert all(r["train_err"] < p["train_err"] for r in runs if r["run"].startswith("resnet")
               for p in runs if p["run"].startswith("plain") and (p["seed"], p["threads"]) == (r["seed"], r["threads"]))
    assert f"{res['demo_cpu_time_s']:.0f} s of CPU time" in prose


def _last_test(run_dir):
    from reslab.rundir import read_metrics

    records = read_metrics(run_dir)
    test = [r for r in records if r.get("event") == "test"][-1]
    end = [r for r in records if r.get("event") == "end"][-1]
    return test, end


def test_readme_segmentation_figures_are_the_committed_results():
    text = README.read_text()
    prose = _flat(_section(text, "**Measured** segmentation", "## Many processes"))
    rows = {}
    for line in _section(text, "**Measured** segmentation", "## Many processes").splitlines():
        if line.startswith("| `"):
            rows[line.split("`")[1] + "@" + line.split("|")[2].strip().split(":")[0]] = line
    runs = {"unet_resnet34@ISBI 2012": ("isbi2012/unet_resnet34", "cell"), "unet@ISBI 2012": ("isbi2012/unet", "cell"),
            "unet_resnet18@Penn-Fudan": ("pennfudan-seg/unet_resnet18", "person")}
    assert set(runs) <= set(rows), sorted(rows)
    for key, (path, fg) in runs.items():
        test, end = _last_test(ROOT / "results" / path)
        row = rows[key]
        assert f"| {test['pixel_err']:.2f} % |" in row, (key, test["pixel_err"])
        assert f"| {test['rand_err']:.4f} |" in row and f"| {test['iou'][fg]:.4f} |" in row, key
        assert f"{test['n']} test" in row
        minutes, seconds = divmod(round(end["wall_time"]), 60)
        assert f"{minutes} min {seconds:02d} s" in row, (key, end["wall_time"])
    bench = json.loads((ROOT / "benchmarks" / "results" / "segmentation.json").read_text())
    r, s = bench["reslab"], bench["smp"]
    assert (f"{r['train_images_per_s']:.2f} vs {s['train_images_per_s']:.2f} images/s "
            f"({bench['ratios']['train_speed_reslab_over_smp']:.2f}x)") in prose
    assert f"test pixel error {r['pixel_err']:.2f} vs {s['pixel_err']:.2f} %" in prose
    assert f"mean IoU {r['miou']:.4f} vs {s['miou']:.4f}" in prose


def test_readme_inference_table_is_the_committed_benchmark():
    text = README.read_text()
    block = _section(text, "**Measured here**", "Training (`python benchmarks/train_throughput.py`")
    res = json.loads((ROOT / "benchmarks" / "results" / "inference.json").read_text())
    r50 = {(r["path"], r["batch"]): r for r in res["cases"]["resnet50"]["rows"]}
    r56 = {r["path"]: r for r in res["cases"]["resnet56"]["rows"]}
    accuracy = res["cases"]["trained_run"]["accuracy"]
    rows = _table_rows(block, "| path | ResNet-50 batch 1: p50 ms")
    assert [r[0] for r in rows] == ["torchvision", *accuracy]
    for path, b1, b16, c56, acc in rows:
        assert b1 == f"{r50[(path, 1)]['p50_ms']:.1f}", path
        assert b16 == f"{r50[(path, 16)]['images_per_s']:.1f}", path
        assert c56 == (f"{r56[path]['images_per_s']:,.0f}" if path in r56 else "–"), path
        a = accuracy.get(path)
        assert acc == (f"{a['top1_err']:.1f} ({a['agree']:.1f})" if a else "–"), path
    targets = res["targets"]
    prose = _flat(block)
    assert f"the best path is {targets['resnet50_batch16_throughput']['ratio']:.1f}x (int8)" in prose
    assert f"the best fp32 path {targets['resnet50_batch16_throughput_fp32']['ratio']:.2f}x" in prose
    assert f"{targets['resnet56_batch256_throughput']['ratio']:.2f}x reslab eager" in prose
    assert all(t["meets_target"] for t in targets["accuracy_equal_to_eager"].values())


def test_readme_training_throughput_is_the_committed_benchmark():
    text = _flat(README.read_text())
    res = json.loads((ROOT / "benchmarks" / "results" / "train_throughput.json").read_text())["results"]
    for name, label in (("resnet20", "ResNet-20 `fit`"), ("resnet56", "ResNet-56")):
        r = res[name]
        assert (f"{label} {r['fit_images_per_s']:,.0f} images/s in fp32" if name == "resnet20"
                else f"{label} {r['fit_images_per_s']:,.0f} and {r['fit_auto_images_per_s']:,.0f}") in text, name
        assert f"{r['auto_ratio_to_bare_fp32']:.2f}x" in text, name


def test_recipe_auto_table_is_the_committed_benchmark():
    """The README's before/after table of `reslab train resnet20 --data imagefolder:DIR` (no flags) is
    benchmarks/results/auto_recipe.json, row by row."""
    data = json.loads((ROOT / "benchmarks" / "results" / "auto_recipe.json").read_text())["datasets"]
    keys = {"Fashion-MNIST, 300 a class": "fashion300", "Penn-Fudan person / background": "pennfudan64",
            "CIFAR-10, 1,000 a class": "cifar10-10k", "CIFAR-10, all": "cifar10-full"}
    text = README.read_text()
    start = text.index("| folder | images | before: test err, steps, wall |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert sorted(keys[r.split("|")[1].strip()] for r in rows) == sorted(data)

    def cell(run):
        return f"{run['test_err']:.2f} %, {run['steps']:,}, {run['wall_s'] / 60:.1f} min"

    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        d = data[keys[cells[0]]]
        assert cells[2] == cell(d["before"]) and cells[3] == cell(d["after"])
        assert cells[4] == f"{d['after']['baselines']['linear_err']:.2f} %"
        assert cells[5] == f"{d['after']['baselines']['majority_err']:.2f} %"
