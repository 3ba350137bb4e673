"""Budgets: how much data and training an experiment gets, from the paper's schedule down to seconds.

A budget keeps an experiment's shape (the same nets, recipe family, augmentation and reports)
and scales its length: the training images used, the epochs, the batch, and the validation and
test images evaluated. ``full`` is the paper's schedule; the CPU presets were chosen by measuring
(see their ``summary``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data import DatasetSplits, load_dataset, stratified_split
from ..errors import ReslabError

__all__ = ["Budget", "BUDGETS", "get_budget", "prepare_data"]


@dataclass(frozen=True)
class Budget:
    """One preset.

    Args:
        name: the ``--budget`` value.
        summary: one sentence for reports and ``--help``.
        recipe: the training recipe the runs start from.
        overrides: ``RunConfig`` fields set on top of the recipe.
        train_size: training images used (a fixed class-stratified subset); None: all.
        val_size: validation images held out of the training set for model selection.
        test_size: test images evaluated (a fixed class-stratified subset); None: all.
    """

    name: str
    summary: str
    recipe: str
    overrides: dict[str, Any] = field(default_factory=dict)
    train_size: int | None = None
    val_size: int = 5000
    test_size: int | None = None

    def settings(self) -> dict[str, Any]:
        """What the budget sets, for ``experiment.json`` and the reports."""
        return {"name": self.name, "summary": self.summary, "recipe": self.recipe, "overrides": dict(self.overrides),
                "train_size": self.train_size, "val_size": self.val_size, "test_size": self.test_size}


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    Budget("full", "the paper's schedule (Sec. 4.2): recipe paper_cifar10, 64k iterations at batch 128, lr 0.1 "
                   "divided by 10 at 32k and 48k, 45k/5k train/val split, the whole test set; for a GPU",
           recipe="paper_cifar10", overrides={"log_every": 100}, val_size=5000),
    # Measured on a 2-core machine shared with other jobs, one torch thread: the 2,500-image,
    # 16-epoch degradation run took about an hour (resnet20 250-400 s, resnet56 690 s); two threads on
    # two idle cores are about twice as fast (resnet56 trains at 120-130 instead of 65 images/s).
    Budget("cpu-90min", "about 90 min for the degradation experiment's 8 nets on 2 idle CPU cores: the cpu-30min "
                        "preset trained 3 times longer, 48 epochs (1,872 iterations)",
           recipe="short_cpu", overrides={"epochs": 48, "batch_size": 64, "lr": 0.1, "log_every": 10},
           train_size=2500, val_size=1000, test_size=2000),
    Budget("cpu-30min", "about 30 min for the degradation experiment's 8 nets on 2 idle CPU cores: 2,500 training "
                        "images, 16 epochs of the one-cycle short_cpu recipe at batch 64 (624 iterations), "
                        "1,000 validation and 2,000 test images",
           recipe="short_cpu", overrides={"epochs": 16, "batch_size": 64, "lr": 0.1, "log_every": 10},
           train_size=2500, val_size=1000, test_size=2000),
    Budget("cpu-5min", "about 5 min for the degradation experiment's 8 nets on 2 idle CPU cores: 1,000 training "
                       "images, 6 epochs of the one-cycle short_cpu recipe at batch 32 (186 iterations), "
                       "500 validation and 1,000 test images",
           recipe="short_cpu", overrides={"epochs": 6, "batch_size": 32, "lr": 0.05, "log_every": 5},
           train_size=1000, val_size=500, test_size=1000),
    Budget("tiny", "seconds, for tests: 64 training images, 1 epoch of short_cpu at batch 32 (2 iterations), "
                   "32 validation and 64 test images",
           recipe="short_cpu", overrides={"epochs": 1, "batch_size": 32, "lr": 0.05, "log_every": 1,
                                          "tensorboard": False, "progress": False},
           train_size=64, val_size=32, test_size=64),
)}


def get_budget(name: str) -> Budget:
    """The preset called ``name``; a ReslabError lists the presets otherwise."""
    if name not in BUDGETS:
        raise ReslabError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


def _stratified_subset(split, n: int | None):
    if split is None or n is None or n >= len(split):
        return split
    return split.subset(stratified_split(split.labels, n, seed=0)[1])


def prepare_data(data: str, data_dir: str | None, budget: Budget):
    """The dataset cut to the budget: the same images for every net and every seed.

    The validation split is held out of the training set (seed 0), then the training and test
    sets are cut to fixed class-stratified subsets, so nets differ only in architecture and seed.
    """
    full = load_dataset(data, data_dir=data_dir, val_size=budget.val_size, seed=0)
    train = _stratified_subset(full.train, budget.train_size)
    val = _stratified_subset(full.val, budget.val_size)
    test = _stratified_subset(full.test, budget.test_size)
    info = dict(full.info)
    info["counts"] = {"train": len(train), "val": len(val), "test": len(test) if test is not None else 0}
    info["counts_available"] = {"train": len(full.train), "val": len(full.val),
                                "test": len(full.test) if full.test is not None else 0}
    return DatasetSplits(full.name, full.classes, full.channels, full.image_size, train, val, test, info)
