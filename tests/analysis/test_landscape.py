import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from reslab import create_model, load_run
from reslab.analysis import calibrate_bn
from reslab.analysis.landscape import filter_normalised_direction, hessian_extremes, loss_at
from reslab.analysis.targets import image_batch
from reslab.cli import main


def test_directions_are_filter_normalised_and_leave_bn_and_biases_alone():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1))
    d = filter_normalised_direction(model, torch.Generator().manual_seed(1))
    for (name, p), t in zip(model.named_parameters(), d):
        assert t.shape == p.shape
        if p.dim() == 1:
            assert not t.any(), name
        else:
            dims = tuple(range(1, p.dim()))
            norm = torch.linalg.vector_norm
            torch.testing.assert_close(norm(t, dim=dims), norm(p.detach(), dim=dims), rtol=1e-5, atol=0)
            assert not torch.allclose(t, p.detach())


def test_loss_at_moves_the_weights_and_puts_them_back(images):
    x, y = images
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = filter_normalised_direction(model, torch.Generator().manual_seed(1))
    loss0, err0 = loss_at(model, [d], [0.0], x, y, chunk=7)
    with torch.no_grad():
        logits = model(x)
    assert loss0 == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert err0 == pytest.approx(100.0 * float((logits.argmax(1) != y).float().mean()))
    moved, _ = loss_at(model, [d], [0.5], x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    twin = create_model("resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1)).eval()
    twin.load_state_dict(before)
    with torch.no_grad():
        for p, t in zip(twin.parameters(), d):
            p.add_(0.5 * t)
        assert moved == pytest.approx(float(F.cross_entropy(twin(x), y)), rel=1e-5)


def test_hessian_extremes_match_the_exact_spectrum():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    params = list(model.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])

    def loss(v):
        out, i = x, 0
        ws = []
        for p in params:
            ws.append(v[i:i + p.numel()].view_as(p))
            i += p.numel()
        out = torch.tanh(out @ ws[0].T + ws[1]) @ ws[2].T + ws[3]
        return F.cross_entropy(out, y)

    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
    lam_max, lam_min = hessian_extremes(model, x, y, iters=500)
    assert lam_max == pytest.approx(float(eig[-1]), rel=1e-4)
    assert lam_min == pytest.approx(float(eig[0]), rel=1e-3, abs=1e-4 * float(eig[-1]))


def test_landscape_of_a_trained_tiny_net_has_its_minimum_at_the_centre(run_dir, tmp_path, capsys):
    # train the fixture run further on the very images the landscape is measured on
    run = load_run(run_dir, "last")
    raw, y, _ = image_batch("embedded", 24, seed=0)
    x = run.normalizer(raw)
    model = run.model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    calibrate_bn(model, x)  # the running statistics of these images, then steps in eval mode to the minimum
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, run_dir / "checkpoints" / "last.safetensors",
              metadata={"format": "pt", "model_name": "resnet20"})
    out = tmp_path / "land"
    argv = ["analyze", "landscape", str(run_dir), "--images", "24", "--grid", "5", "--span", "0.5", "--out", str(out),
            "--threads", "1", "--hessian-iters", "3"]
    assert main(argv) == 0
    record = json.loads((out / "analysis.json").read_text())
    (m,) = record["measurements"].values()
    line = [r[0] for r in m["loss"]]
    assert line[2] == min(line) and line[0] > 1.5 * line[2] and line[4] > 1.5 * line[2]
    assert m["lambda_max"] > 0 and abs(m["lambda_min"]) <= m["lambda_max"]
    assert "the centre is the minimum of the line" in record["findings"][0] and "lambda_min at most" in record["findings"][0]
    # grid cells are cached: killed before the target was recorded, a rerun reuses them
    cells = next(out.glob("cells-*.json"))
    cached = json.loads(cells.read_text())
    assert len(cached) == 5
    cached["0,0"] = [123.0, 50.0]  # a marker: reused cells are read, not recomputed
    cells.write_text(json.dumps(cached))
    record["measurements"] = {}
    (out / "analysis.json").write_text(json.dumps(record))
    assert main(argv) == 0
    assert "5 of 5 grid cells cached, 0 to go" in capsys.readouterr().out
    (m,) = json.loads((out / "analysis.json").read_text())["measurements"].values()
    assert m["loss"][0] == [123.0]


def test_landscape_bad_grid(run_dir, tmp_path, capsys):
    for grid in ("4", "1", "301"):
        assert main(["analyze", "landscape", str(run_dir), "--grid", grid, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert "--grid must be an odd integer from 3 to 101" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_a_landscape_too_large_for_the_memory_is_refused_first(run_dir, tmp_path, capsys, monkeypatch):
    from reslab.analysis import landscape

    model = load_run(run_dir, "last").model
    x = torch.zeros(8, 1, 28, 28)
    small = landscape.memory_needed(model, x, chunk=8, hessian_images=8, directions=1)
    large = landscape.memory_needed(model, x, chunk=250, hessian_images=100, directions=2)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert weights * 3 < small < large
    # free memory for about 10 images: the command says so before measuring anything
    free = int(small * 1.3 / 0.8)
    monkeypatch.setattr(landscape, "available_memory", lambda _device: free)
    out = tmp_path / "o"
    assert main(["analyze", "landscape", str(run_dir), "--images", "100", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the landscape would need about" in err and "GiB is free on cpu; --images " in err, err
    assert "\n" not in err and not out.exists()
    fits = int(err.split("--images ")[1].split()[0])
    need = [landscape.memory_needed(model, x, chunk=n, hessian_images=n, directions=1) for n in (fits, fits + 1)]
    assert 8 <= fits < 100 and need[0] <= 0.8 * free < need[1]


def test_the_2d_grid_splits_over_torchrun_processes_and_gives_the_same_cells(run_dir, tmp_path, capsys, monkeypatch):
    import os
    import subprocess
    import sys

    args = ["analyze", "landscape", str(run_dir), "--2d", "--grid", "3", "--images", "8", "--hessian-iters", "1"]
    assert main([*args, "--out", str(tmp_path / "one"), "--threads", "1"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESLAB_CPU_BF16": "0"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "reslab", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr
    (a,) = json.loads((tmp_path / "one" / "analysis.json").read_text())["measurements"].values()
    (b,) = json.loads((tmp_path / "two" / "analysis.json").read_text())["measurements"].values()
    assert len(a["loss"]) == 3 and all(len(r) == 3 for r in a["loss"])
    torch.testing.assert_close(torch.tensor(b["loss"]), torch.tensor(a["loss"]), rtol=1e-5, atol=0)
    assert b["error"] == a["error"]
    assert sorted(p.name for p in (tmp_path / "two").glob("cells-*")) == [p.name for p in (tmp_path / "one").glob("cells-*")]
    # the other analyses run in one process
    capsys.readouterr()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["analyze", "gradients", "resnet20", "--out", str(tmp_path / "g")]) == 2
    assert "only landscape splits its grid over torchrun processes" in capsys.readouterr().err
