"""CI's mutation check: a small fixed sample of mutants that the tests must kill.

Each mutant is one textual change to one module of reslab (or one recipe), chosen from mutants
that scripts/mutation.sh's full mutmut run reports killed, across the modules whose figures users
read. Each is applied to its own temporary copy of src/reslab (never to this tree) and the tests
that should catch it run against that copy (PYTHONPATH); a mutant whose tests pass has survived
and the script exits 1. So does a mutant whose text is no longer in its module: update the sample
with the module. The unmutated copy must pass the same tests first.

    python scripts/mutation_sample.py [--jobs 2] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # under src/reslab
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]


T_METRICS = "tests/test_metrics.py"
T_EVAL = "tests/test_evaluate.py"
T_PRED = "tests/test_predict.py"
T_SCHED = "tests/train/test_schedule.py"
T_TRANS = "tests/data/test_transforms.py"
T_CLS = "tests/train/test_classify.py"
T_REC = "tests/test_recipes.py"

SAMPLE = [
    # metrics
    Mutant("confusion matrix transposed", "metrics.py", "idx = target.long() * num_classes + pred.long()",
           "idx = pred.long() * num_classes + target.long()", (f"{T_METRICS}::test_confusion_matrix_rows_are_true_classes_columns_predictions",)),
    Mutant("empty class gets an accuracy", "metrics.py", "torch.where(totals > 0,", "torch.where(totals >= 0,",
           (f"{T_METRICS}::test_per_class_accuracy_is_the_diagonal_over_row_sums_in_percent_and_nan_without_samples",)),
    Mutant("top-k not capped at the classes", "metrics.py", "maxk = min(max(ks), logits.shape[1])", "maxk = max(ks)",
           (f"{T_METRICS}::test_topk_correct_with_k_above_the_number_of_classes_counts_every_sample",)),
    # evaluate
    Mutant("mean loss summed as a mean", "evaluate.py", 'y, reduction="sum").double()', 'y, reduction="mean").double()',
           (f"{T_EVAL}::test_center_protocol_counts_against_hand_computed_values",)),
    Mutant("views summed, not averaged", "evaluate.py", "return probs / len(views)", "return probs",
           (f"{T_EVAL}::test_ten_crop_is_the_mean_softmax_of_exactly_the_ten_views",)),
    Mutant("shards rounded down", "evaluate.py", "per = -(-n // world)", "per = n // world",
           (f"{T_EVAL}::test_ranks_evaluate_disjoint_contiguous_shards_that_cover_the_split",)),
    Mutant("streamed multiscale without mirrors", "evaluate.py", "vs = [u for img in imgs for u in (img, img.flip(3))]",
           "vs = imgs", ("tests/test_eval_protocols.py::test_streamed_multiscale_is_the_mean_over_whole_images_at_each_shorter_side_and_mirrors",)),
    # predict
    Mutant("no fallback to last", "predict.py", 'used = "last"', 'used = "best"',
           (f"{T_PRED}::test_load_run_default_is_best_and_falls_back_to_last_when_there_is_no_best",)),
    Mutant("top-k not capped at the classes (predict)", "predict.py", "k = min(topk, len(run.classes))", "k = topk",
           (f"{T_PRED}::test_predict_caps_k_at_the_number_of_classes_and_default_is_five",)),
    Mutant("integer weights for float parameters pass", "predict.py",
           "(v.is_floating_point() or own[k].is_floating_point())", "(v.is_floating_point() and own[k].is_floating_point())",
           (f"{T_PRED}::test_check_weights_refuses_another_dtype_and_non_finite_values",)),
    # schedule
    Mutant("one-cycle starts at lr/10", "train/schedule.py", "return lr / 25 + (lr - lr / 25)", "return lr / 10 + (lr - lr / 10)",
           (f"{T_SCHED}::test_onecycle_start_peak_and_end",)),
    Mutant("plateau drops one epoch early", "train/schedule.py", 'if self.state["plateau_bad"] > self.cfg.plateau_patience:',
           'if self.state["plateau_bad"] >= self.cfg.plateau_patience:', (f"{T_SCHED}::test_constant_and_plateau",)),
    Mutant("warm-up ends at the threshold", "train/schedule.py", "err < self.cfg.warmup_until_err", "err <= self.cfg.warmup_until_err",
           (f"{T_SCHED}::test_warmup_without_a_cap_ends_only_when_the_error_is_strictly_below_the_threshold",)),
    Mutant("milestones always in iterations", "train/schedule.py", 'unit = 1 if cfg.milestone_unit == "iter" else self.steps_per_epoch',
           "unit = 1", (f"{T_SCHED}::test_step_milestones_in_iterations_and_in_epochs",)),
    # transforms
    Mutant("crop offsets miss the last position", "data/transforms.py",
           "dy = torch.randint(0, 2 * pad + 1, (n,)", "dy = torch.randint(0, 2 * pad, (n,)",
           (f"{T_TRANS}::test_pad_crop_flip_outputs_are_crops_of_the_padded_image_or_its_mirror",)),
    Mutant("flips a quarter of the batch", "data/transforms.py", "device=gen.device).to(x.device) < 0.5",
           "device=gen.device).to(x.device) < 0.25", (f"{T_TRANS}::test_pad_crop_flip_options",)),
    Mutant("PCA lighting with the eigenvectors as rows", "data/transforms.py", "@ _EIGVEC.to(x.device).T", "@ _EIGVEC.to(x.device)",
           (f"{T_TRANS}::test_pca_lighting_adds_eigenvector_noise_scaled_by_the_eigenvalues",)),
    Mutant("per-pixel std without the mean removed", "data/transforms.py", "var = (sq / n - mean_img ** 2).mean()",
           "var = (sq / n).mean()", (f"{T_TRANS}::test_normalizer_fit_per_channel_and_per_pixel_mean_statistics",)),
    Mutant("test resize rounded up", "data/transforms.py", "int(math.floor(crop * 256 / 224))", "int(math.ceil(crop * 256 / 224))",
           (f"{T_TRANS}::test_resize_short_side_ratio_and_resize_center_crop_class",)),
    # classify (the loss)
    Mutant("auxiliary losses unweighted", "train/classify.py", "extra = sum(w * ce(a)", "extra = sum(ce(a)",
           (f"{T_CLS}::test_loss_with_auxiliary_heads_adds_their_weighted_losses_and_predicts_with_the_main_head",)),
    Mutant("label smoothing dropped", "train/classify.py", "label_smoothing=self.label_smoothing)", ")",
           (f"{T_CLS}::test_loss_is_cross_entropy_with_the_configured_label_smoothing",)),
    Mutant("training error is the accuracy", "train/classify.py", '"train_err": 100.0 * (1 - stats["correct"] / n)',
           '"train_err": 100.0 * (stats["correct"] / n)', (f"{T_CLS}::test_train_metrics_and_running_error_from_summed_statistics",)),
    # recipes (YAML)
    Mutant("paper_cifar10: second milestone at 64k", "recipes/paper_cifar10.yaml", "milestones: [32000, 48000]",
           "milestones: [32000, 64000]", (f"{T_REC}::test_recipe_sets_exactly_the_values_of_its_source",)),
    Mutant("paper_imagenet: lighting 0.2", "recipes/paper_imagenet.yaml", "lighting: 0.1", "lighting: 0.2",
           (f"{T_REC}::test_recipe_sets_exactly_the_values_of_its_source",)),
]


def _copy(dest: Path) -> Path:
    shutil.copytree(ROOT / "src" / "reslab", dest / "reslab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _fork_pytest(src: Path, tests: tuple[str, ...], log: Path, timeout: int) -> int:
    """Run pytest on ``tests`` in a forked child whose reslab is the copy in ``src``; returns its pid.

    The parent has imported torch, pytest and friends but not reslab and has run no torch op, so
    forking is safe and each mutant skips those imports (seconds each on a small machine)."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        signal.alarm(timeout)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.path.insert(0, str(src))
        os.environ["PYTHONPATH"] = str(src)  # for any subprocess a test starts
        os.chdir(ROOT)
        import pytest

        import reslab

        if not Path(reslab.__file__).is_relative_to(src):
            print(f"reslab imported from {reslab.__file__}, not from the mutated copy {src}")
            os._exit(3)
        code = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cov",
                                *tests]))
    except BaseException:  # noqa: B036 - the child must never return into the parent's code
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _status(wait_status: int) -> str:
    if os.WIFSIGNALED(wait_status):
        return "timeout" if os.WTERMSIG(wait_status) == signal.SIGALRM else f"error (signal {os.WTERMSIG(wait_status)})"
    code = os.WEXITSTATUS(wait_status)
    return {1: "killed", 0: "SURVIVED"}.get(code, f"error (pytest exit {code})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per mutant (a mutant that hangs counts as killed)")
    ap.add_argument("--list", action="store_true", help="print the sample and exit")
    a = ap.parse_args()
    if a.list:
        for m in SAMPLE:
            print(f"{m.file}: {m.name}: {m.old!r} -> {m.new!r}")
        return 0
    t0 = time.monotonic()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    os.environ.pop("PYTEST_ADDOPTS", None)
    import numpy  # noqa: F401  - imported once here, shared by every forked child
    import PIL.Image  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    with tempfile.TemporaryDirectory(prefix="reslab-mutation-sample-") as tmp:
        tmp = Path(tmp)
        base = _copy(tmp / "base")
        _, st = os.waitpid(_fork_pytest(base, tuple(dict.fromkeys(t for m in SAMPLE for t in m.tests)), tmp / "base.log",
                                        a.timeout), 0)
        if _status(st) != "SURVIVED":  # all tests pass: what a surviving mutant looks like
            print((tmp / "base.log").read_text()[-4000:])
            print("mutation sample: the tests fail without any mutant; fix them first")
            return 1
        results: dict[int, tuple[str, float]] = {}
        running: dict[int, tuple[int, float]] = {}
        todo = list(enumerate(SAMPLE))
        while todo or running:
            while todo and len(running) < a.jobs:
                i, m = todo.pop(0)
                src = _copy(tmp / f"m{i}")
                path = src / "reslab" / m.file
                text = path.read_text()
                if text.count(m.old) != 1:
                    results[i] = (f"not applied ({text.count(m.old)} matches of its text in src/reslab/{m.file})", 0.0)
                    continue
                path.write_text(text.replace(m.old, m.new))
                running[_fork_pytest(src, m.tests, tmp / f"m{i}.log", a.timeout)] = (i, time.monotonic())
            if running:
                pid, st = os.waitpid(-1, 0)
                i, started = running.pop(pid)
                results[i] = (_status(st), time.monotonic() - started)
        bad = 0
        for i, m in enumerate(SAMPLE):
            status, secs = results[i]
            print(f"  {status:>8}  {secs:5.1f}s  {m.file}: {m.name}")
            if status not in ("killed", "timeout"):
                bad += 1
                log = tmp / f"m{i}.log"
                print(log.read_text()[-3000:] if log.exists() else "")
    print(f"mutation sample: {len(SAMPLE) - bad}/{len(SAMPLE)} mutants killed in {time.monotonic() - t0:.0f}s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
