"""Data-parallel training on PyTorch's own engine: torchrun, gloo on the CPU, 2 processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "resnet20", "--data", "embedded", "--batch-size", "32", "--schedule", "constant",
         "--set", "val_size=100", "--deterministic", "--no-progress", "--set", "tensorboard=false"]


def _reslab(args, nproc=1, **kw):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "reslab", *args], env=ENV, capture_output=True, text=True, timeout=600, **kw)


def _bn_stat_diff(a_dir, b_dir):
    """Largest difference of any BN running statistic, relative to that buffer's largest magnitude."""
    a = load_file(str(a_dir / "checkpoints" / "last.safetensors"))
    b = load_file(str(b_dir / "checkpoints" / "last.safetensors"))
    assert a.keys() == b.keys()
    keys = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert keys
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in keys)


def test_sync_bn_run_keeps_the_global_batch_statistics_of_one_process(tmp_path):
    # One step from the same initialisation and the same global batch: the forward pass is all
    # that has touched the BN running statistics, so --sync-bn on 2 processes must give one
    # process's statistics up to float32 summation order (measured 1.4e-7); per-rank statistics
    # over half the batch differ by orders of magnitude more (measured 2.6e-2 on variances, 6.0
    # on means). The gradients are compared exactly in float64 by the next test: in float32 the
    # backward of BN over padded, mostly-constant images is ill-conditioned, so a 1e-7 change of
    # summation order moves the gradients by up to 1e-2 depending on the CPU's kernels.
    args = [*TRAIN, "--iterations", "1", "--lr", "0.005"]
    runs = {"one": ([], 1), "sync": (["--sync-bn"], 2), "local": ([], 2)}
    for name, (extra, nproc) in runs.items():
        proc = _reslab([*args, *extra, "--out", str(tmp_path / name)], nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-2000:]
    synced = _bn_stat_diff(tmp_path / "sync", tmp_path / "one")
    local = _bn_stat_diff(tmp_path / "local", tmp_path / "one")
    assert synced < 1e-4, f"2 processes with --sync-bn keep BN statistics that differ from 1 process by {synced:.2e}"
    assert local > 1e-2, f"per-rank BN statistics should differ from global ones, differ by only {local:.2e}"
    env = json.loads((tmp_path / "sync" / "env.json").read_text())
    assert env["world_size"] == 2
    # Rank 0 alone writes: one metrics file with one start record.
    starts = [line for line in (tmp_path / "sync" / "metrics.jsonl").read_text().splitlines() if '"start"' in line]
    assert len(starts) == 1


def _grad_worker(rank, world, init, out_path, x, y, state, sync):
    import torch.distributed as dist

    import reslab
    from reslab.train.distributed import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = reslab.create_model("resnet20", in_chans=1).double()
    model.load_state_dict(state)
    if sync:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
    net = torch.nn.parallel.DistributedDataParallel(model)
    torch.nn.functional.cross_entropy(net(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
    if rank == 0:  # DDP has averaged the gradients: every rank holds the same ones
        torch.save({"grads": [p.grad for p in model.parameters()],
                    "buffers": {k: v for k, v in model.state_dict().items() if "running" in k}}, out_path)
    dist.destroy_process_group()


@pytest.mark.parametrize("sync", [True, False], ids=["sync_bn", "per_rank_bn"])
def test_ddp_gradients_with_global_bn_equal_one_process_in_float64(tmp_path, embedded, sync):
    import reslab
    from reslab.data.transforms import Normalizer

    images, labels = embedded.train.images[:32], embedded.train.labels[:32]
    x = Normalizer.fit("per_pixel_mean", images)(images).double()
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", in_chans=1).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    mp.spawn(_grad_worker, args=(2, f"file://{tmp_path}/rdzv", str(tmp_path / "g.pt"), x, labels, state, sync),
             nprocs=2, join=True)
    got = torch.load(tmp_path / "g.pt", weights_only=True)
    grad_err = max(((g - p.grad).norm() / p.grad.norm()).item() for g, p in zip(got["grads"], model.parameters()))
    ref = {k: v for k, v in model.state_dict().items() if "running" in k}
    stat_err = max(((got["buffers"][k] - v).abs().max() / v.abs().max()).item() for k, v in ref.items())
    if sync:  # float64: only summation order differs (measured 9e-8 on gradients)
        assert grad_err < 1e-6, f"DDP + GlobalBatchNorm2d gradients differ from one process by {grad_err:.2e}"
        # GlobalBatchNorm2d rounds its float64 statistics to float32 before the running update
        assert stat_err < 1e-6, f"global BN running statistics differ from one process by {stat_err:.2e}"
    else:  # per-rank statistics over 16 images: a different function, far from the global batch's
        assert grad_err > 1e-2 and stat_err > 1e-3, (grad_err, stat_err)


def _eval_worker(rank, world, init, out_path, images, labels, state):
    import torch.distributed as dist

    import reslab
    from reslab.data import TensorImages
    from reslab.data.transforms import Normalizer
    from reslab.evaluate import evaluate

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    model = reslab.create_model("resnet20", in_chans=1)
    model.load_state_dict(state)
    res = evaluate(model, TensorImages(images, labels), normalizer=Normalizer.fit("per_pixel_mean", images),
                   num_classes=10, batch_size=16, rank=rank, world_size=world)
    if rank == 0:
        torch.save({"n": res.n, "top1": res.top1_err, "top5": res.top5_err, "cm": res.confusion, "loss": res.loss}, out_path)
    dist.destroy_process_group()


def test_distributed_evaluation_counts_every_sample_once(tmp_path, embedded):
    import reslab
    from reslab.data.transforms import Normalizer
    from reslab.evaluate import evaluate

    images, labels = embedded.test.images[:101], embedded.test.labels[:101]  # 101: not divisible by 2
    torch.manual_seed(0)
    model = reslab.create_model("resnet20", in_chans=1)
    single = evaluate(model, embedded.test.subset(torch.arange(101)), normalizer=Normalizer.fit("per_pixel_mean", images),
                      num_classes=10, batch_size=16)
    mp.spawn(_eval_worker, args=(2, f"file://{tmp_path}/rdzv", str(tmp_path / "res.pt"), images, labels, model.state_dict()),
             nprocs=2, join=True)
    dist = torch.load(tmp_path / "res.pt", weights_only=True)
    assert dist["n"] == single.n == 101
    assert dist["top1"] == single.top1_err and dist["top5"] == single.top5_err
    assert torch.equal(dist["cm"], single.confusion)
    assert dist["loss"] == pytest.approx(single.loss, rel=1e-6)


def test_killed_two_process_run_resumes_with_one_process_from_the_saved_step(tmp_path):
    out = tmp_path / "run"
    args = [*TRAIN, "--iterations", "40", "--set", "log_every=1", "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "reslab", *args]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"event": "step", "step": 3,' in metrics.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    state = torch.load(out / "checkpoints" / "last.state.pt", weights_only=True)
    saved = state["step"]
    assert 3 <= saved < 40 and state["world_size"] == 2
    assert [json.loads(line) for line in metrics.read_text().splitlines()][-1]["status"] == "interrupted"
    resumed = _reslab(["train", "resnet20", "--resume", str(out), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    after = records[[i for i, r in enumerate(records) if r.get("status") == "interrupted"][-1] + 1:]
    steps = [r["step"] for r in after if r["event"] == "step"]
    assert steps[0] == saved + 1 and steps[-1] == 40
    assert records[-1]["event"] == "end" and records[-1]["status"] == "finished"
