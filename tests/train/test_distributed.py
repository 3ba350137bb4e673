"""Data-parallel training on PyTorch's own engine: torchrun, gloo on the CPU, 2 processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "resnet20", "--data", "embedded", "--batch-size", "32", "--schedule", "constant",
         "--set", "val_size=100", "--deterministic", "--no-progress", "--set", "tensorboard=false"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """This process's references on one intra-op thread, as the ranks run: two OpenMP threads on
    2 cores shared with the ranks and other jobs ran a float64 backward pass 15x slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    # on means). Gradients and weights are compared in float64 below: in float32 the backward
    # pass is discontinuous at the ReLUs, and a 1e-7 change of the forward values flips a
    # near-zero ReLU input now and then (one flip moved every gradient by 5e-3; measured).
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


def _worker(rank, world, init, out_path, x, y, state, images, labels):
    """One rank of the in-process checks: one float64 DDP backward pass with global BN and one
    with per-rank BN over rank's half of (x, y), then a distributed evaluation of (images, labels)."""
    import torch.distributed as dist

    import reslab
    from reslab.data import TensorImages
    from reslab.data.transforms import Normalizer
    from reslab.evaluate import evaluate
    from reslab.train.distributed import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    got = {}
    for name in ("sync_bn", "per_rank_bn"):
        model = reslab.create_model("resnet20", in_chans=1).double()
        model.load_state_dict(state)
        if name == "sync_bn":
            model = convert_sync_batchnorm(model, torch.device("cpu"))
        net = torch.nn.parallel.DistributedDataParallel(model)
        torch.nn.functional.cross_entropy(net(x.chunk(world)[rank]), y.chunk(world)[rank]).backward()
        # DDP has averaged the gradients: every rank holds the same ones
        got[name] = {"grads": [p.grad for p in model.parameters()],
                     "buffers": {k: v for k, v in model.state_dict().items() if "running" in k}}
    model = reslab.create_model("resnet20", in_chans=1)
    model.load_state_dict(state)
    res = evaluate(model, TensorImages(images, labels), normalizer=Normalizer.fit("per_pixel_mean", images),
                   num_classes=10, batch_size=16, rank=rank, world_size=world)
    got["eval"] = {"n": res.n, "top1": res.top1_err, "top5": res.top5_err, "cm": res.confusion, "loss": res.loss}
    if rank == 0:
        torch.save(got, out_path)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, embedded):
    """One spawn of 2 processes (a spawn costs seconds) for the gradient and evaluation checks."""
    import reslab
    from reslab.data.transforms import Normalizer

    tmp = tmp_path_factory.mktemp("spawn")
    images, labels = embedded.train.images[:32], embedded.train.labels[:32]
    x = Normalizer.fit("per_pixel_mean", images)(images).double()
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in reslab.create_model("resnet20", in_chans=1).state_dict().items()}
    test_images, test_labels = embedded.test.images[:101], embedded.test.labels[:101]  # 101: not divisible by 2
    mp.spawn(_worker, args=(2, f"file://{tmp}/rdzv", str(tmp / "got.pt"), x, labels, state, test_images, test_labels),
             nprocs=2, join=True)
    return x, labels, state, torch.load(tmp / "got.pt", weights_only=True)


@pytest.mark.parametrize("sync", [True, False], ids=["sync_bn", "per_rank_bn"])
def test_ddp_gradients_with_global_bn_equal_one_process_in_float64(spawned, sync):
    import reslab

    x, labels, state, got = spawned
    got = got["sync_bn" if sync else "per_rank_bn"]
    model = reslab.create_model("resnet20", in_chans=1).double()
    model.load_state_dict(state)
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    grad_err = max(((g - p.grad).norm() / p.grad.norm()).item() for g, p in zip(got["grads"], model.parameters()))
    ref = {k: v for k, v in model.state_dict().items() if "running" in k}
    stat_err = max(((got["buffers"][k] - v).abs().max() / v.abs().max()).item() for k, v in ref.items())
    if sync:  # float64: only summation order differs (measured 9e-8 on gradients)
        assert grad_err < 1e-6, f"DDP + GlobalBatchNorm2d gradients differ from one process by {grad_err:.2e}"
        # GlobalBatchNorm2d rounds its float64 statistics to float32 before the running update
        assert stat_err < 1e-6, f"global BN running statistics differ from one process by {stat_err:.2e}"
    else:  # per-rank statistics over 16 images: a different function, far from the global batch's
        assert grad_err > 1e-2 and stat_err > 1e-3, (grad_err, stat_err)


def test_distributed_evaluation_counts_every_sample_once(spawned, embedded):
    import reslab
    from reslab.data.transforms import Normalizer
    from reslab.evaluate import evaluate

    *_, state, got = spawned
    images = embedded.test.images[:101]
    model = reslab.create_model("resnet20", in_chans=1)
    model.load_state_dict(state)
    single = evaluate(model, embedded.test.subset(torch.arange(101)), normalizer=Normalizer.fit("per_pixel_mean", images),
                      num_classes=10, batch_size=16)
    dist = got["eval"]
    assert dist["n"] == single.n == 101
    assert dist["top1"] == single.top1_err and dist["top5"] == single.top5_err
    assert torch.equal(dist["cm"], single.confusion)
    assert dist["loss"] == pytest.approx(single.loss, rel=1e-6)


# --- kill, resume, compare -----------------------------------------------------------------
# Five trainings of one config (resnet20, global batch 32, lr 0.005, 6 steps, --sync-bn,
# --deterministic), each fit() run by the driver below: "killed" (2 processes, SIGTERM on rank 0
# after step 3), its copies resumed with 1 and with 2 processes, and uninterrupted runs with 1 and
# 2 processes. Batches are global and their order and augmentation do not depend on the world
# size, and --sync-bn normalises over the global batch, so all five compute the same function:
# in exact arithmetic every run ends with the same weights.
#
# They run in float64. In float32 the runs of different world sizes differ by far more than
# rounding: the backward pass is discontinuous at every ReLU, and the ~1e-7 difference of the
# forward values between BatchNorm2d (1 process) and GlobalBatchNorm2d (2 processes) flips the
# side of a near-zero ReLU input now and then. One flip in the last block (of 100,352 inputs)
# moved the first step's gradients by 5e-3 (relative, every tensor; measured); after 6 steps the
# float32 updates of 1 and 2 processes differed by 5% overall and by 28% in the stem conv, and a
# bound that wide would let a broken all-reduce pass. In float64 they agree to 3e-13 (measured).
DRIVER = """
import json, os, shutil, signal, sys

import torch

import reslab
import reslab.train.loop as loop
from reslab.data import DatasetSplits
from reslab.train import TrainingInterrupted

# float64 parameters and buffers (GlobalBatchNorm2d too); the loader's float32 batches are cast
# on the way into the model
torch.set_default_dtype(torch.float64)
rank = int(os.environ.get("RANK", "0"))
created = []
_create_model = loop.create_model


def create_model(*args, **kwargs):
    model = _create_model(*args, **kwargs)
    model.register_forward_pre_hook(lambda _m, inputs: tuple(t.double() for t in inputs))
    created.append({k: v.clone() for k, v in model.state_dict().items()})
    return model


loop.create_model = create_model
cfg = reslab.make_config(model="resnet20", data="embedded", val_size=100, batch_size=32, lr=0.005,
                         schedule="constant", iterations=6, sync_bn=True, deterministic=True,
                         log_every=1, progress=False, tensorboard=False)
d = reslab.load_dataset("embedded", val_size=100, seed=cfg.seed)
data = DatasetSplits(d.name, d.classes, d.channels, d.image_size, d.train, d.val, None)  # no test pass
for job in sys.argv[1:]:  # MODE:OUT, MODE run, kill (SIGTERM on rank 0 after step 3), resume, or copy:SRC:DST
    mode, out = job.split(":", 1)
    if mode == "copy":
        if rank == 0:
            shutil.copytree(*out.split(":"))
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        continue
    steps = []

    def on_step(step, model):
        steps.append(step)
        if mode == "kill" and step == 3 and rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        status = reslab.fit(cfg, out, resume=mode == "resume", data=data, on_step=on_step).status
    except TrainingInterrupted:
        status = "interrupted"
    if mode != "resume" and rank == 0:
        torch.save(created[-1], out + ".init.pt")
    print("RESULT " + json.dumps({"job": job, "rank": rank, "status": status, "steps": steps}), flush=True)
"""


def _drive(driver, nproc, *jobs):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    return subprocess.Popen([*launcher, str(driver), *jobs], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # ranks out of step wait in their collectives for 30 minutes
        proc.terminate()  # torchrun passes SIGTERM on to its workers
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"the launch did not end within {timeout}s; stderr:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return {(r["job"].split(":")[-1], r["rank"]): r for r in
            (json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT "))}


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """Two launches. 2 processes: the killed run, two copies of it, one resumed there and then
    (same world size), the uninterrupted run. Then 1 process, fresh: the other copy resumed (only
    what the checkpoint holds carries over) and the uninterrupted run."""
    root = tmp_path_factory.mktemp("ddp")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    res = _results(_drive(driver, 2, f"kill:{root}/killed", f"copy:{root}/killed:{root}/resumed_1",
                          f"copy:{root}/killed:{root}/resumed_2", f"resume:{root}/resumed_2", f"run:{root}/two"))
    res.update(_results(_drive(driver, 1, f"resume:{root}/resumed_1", f"run:{root}/one")))
    return root, {(Path(run).name, rank): r for (run, rank), r in res.items()}


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(run):
    w = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert all(v.dtype == torch.float64 for v in w.values() if v.is_floating_point())  # the driver's float64 took
    return w


def _differences(a, b, w0):
    """(largest difference of a parameter between two runs relative to its update ``b - w0``,
    largest difference of a BN running statistic relative to its largest magnitude)."""
    assert a.keys() == b.keys() == w0.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k.endswith("num_batches_tracked"))
    params = [k for k in a if a[k].is_floating_point() and "running_" not in k]
    stats = [k for k in a if "running_" in k]
    assert params and stats
    return (max(((a[k] - b[k]).norm() / (b[k] - w0[k]).norm()).item() for k in params),
            max(((a[k] - b[k]).abs().max() / b[k].abs().max()).item() for k in stats))


def test_sigterm_on_rank_0_stops_every_rank_after_that_step(ddp_runs):
    root, res = ddp_runs
    # The signal reached rank 0 alone; the all-reduced flag stopped rank 1 after the same step.
    assert res["killed", 0]["status"] == res["killed", 1]["status"] == "interrupted"
    assert res["killed", 0]["steps"] == res["killed", 1]["steps"] == [1, 2, 3]
    state = torch.load(root / "killed" / "checkpoints" / "last.state.pt", weights_only=True)
    assert (state["step"], state["weights_step"], state["epoch"], state["batch"], state["world_size"]) == (3, 3, 0, 3, 2)
    records = _records(root / "killed")
    assert [r["event"] for r in records] == ["start", "step", "step", "step", "end"]  # rank 0 alone writes
    assert records[0]["world_size"] == 2 and records[-1]["status"] == "interrupted" and records[-1]["step"] == 3
    assert json.loads((root / "killed" / "env.json").read_text())["world_size"] == 2


def _check_resumed(root, res, name, ranks):
    for rank in range(ranks):
        assert res[name, rank]["status"] == "finished" and res[name, rank]["steps"] == [4, 5, 6]
    records = _records(root / name)
    after = records[[i for i, r in enumerate(records) if r.get("status") == "interrupted"][-1] + 1:]
    assert [r["step"] for r in after if r["event"] == "step"] == [4, 5, 6]
    assert after[-1]["event"] == "end" and after[-1]["status"] == "finished" and after[-1]["step"] == 6
    state = torch.load(root / name / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["step"] == 6 and state["world_size"] == ranks


def test_resume_with_the_same_world_size_is_bit_identical_to_an_uninterrupted_run(ddp_runs):
    root, res = ddp_runs
    _check_resumed(root, res, "resumed_2", 2)
    # Same world size, same reductions in the same order: nothing but the checkpoint (weights,
    # momentum, BN statistics, position in the epoch) carries steps 1-3 over, so every weight,
    # buffer and counter must be bit-identical (it is).
    a, b = _weights(root / "resumed_2"), _weights(root / "two")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


# Parameters: float64 reordering over 6 steps moved them by at most 2.7e-13 of their update
# (measured). Deliberate breaks moved them by 0.4 to 12 times their update: every rank taking
# the same half of the batch 1.5, no gradient all-reduce 2.3, sums instead of means 1.6, per-rank
# BN 1.0, BN statistics all-reduced without their gradient 12, per-rank augmentation 1.5, resume
# without the momentum 0.5, resume one batch early 0.4. BN running statistics: GlobalBatchNorm2d
# rounds its float64 batch statistics to float32 before the running update (measured 2.4e-8 of
# the largest value).
PARAM_BOUND, STAT_BOUND = 1e-8, 1e-6


def test_two_processes_with_sync_bn_train_like_one_process(ddp_runs):
    root, res = ddp_runs
    assert res["two", 0]["steps"] == res["two", 1]["steps"] == res["one", 0]["steps"] == [1, 2, 3, 4, 5, 6]
    w0 = torch.load(root / "one.init.pt", weights_only=True)
    init_two = torch.load(root / "two.init.pt", weights_only=True)
    assert all(torch.equal(w0[k], init_two[k]) for k in w0)
    param, stat = _differences(_weights(root / "two"), _weights(root / "one"), w0)
    assert param < PARAM_BOUND, f"2 processes' parameters differ from 1 process's by {param:.2e} of their update"
    assert stat < STAT_BOUND, f"2 processes' BN statistics differ from 1 process's by {stat:.2e}"


def test_killed_two_process_run_resumed_with_one_process_ends_with_the_uninterrupted_weights(ddp_runs):
    root, res = ddp_runs
    _check_resumed(root, res, "resumed_1", 1)
    w0 = torch.load(root / "one.init.pt", weights_only=True)
    resumed = _weights(root / "resumed_1")
    for ref in ("one", "two"):
        param, stat = _differences(resumed, _weights(root / ref), w0)
        assert param < PARAM_BOUND, f"2->1 resumed parameters differ from run {ref} by {param:.2e} of their update"
        assert stat < STAT_BOUND, f"2->1 resumed BN statistics differ from run {ref} by {stat:.2e}"


def test_resumed_epoch_statistics_equal_the_uninterrupted_epochs(ddp_runs):
    root, _ = ddp_runs
    for resumed, ref in (("resumed_2", "two"), ("resumed_1", "one")):
        a, b = (next(r for r in _records(root / name) if r["event"] == "epoch") for name in (resumed, ref))
        assert (a["train_err"], a["train_loss"]) == (b["train_err"], pytest.approx(b["train_loss"], rel=1e-9)), resumed
