"""Shared fixtures: one tiny real dataset (a slice of the embedded Fashion-MNIST subset)."""
import os

os.environ.setdefault("RESLAB_CPU_BF16", "0")  # amp auto = fp32 in tests on every CPU (bf16 is tested by forcing it)

import pytest
import torch

from reslab.data import DatasetSplits, load_dataset

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One intra-op thread per xdist worker: with 2 workers on 2 cores, 2 threads each
    # oversubscribe the CPU and slow conv layers by an order of magnitude.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def embedded():
    return load_dataset("embedded")


def _take(split, n):
    per = max(1, n // 10)
    idx = torch.cat([(split.labels == c).nonzero().squeeze(1)[:per] for c in range(10)])
    return split.subset(idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))])


@pytest.fixture(scope="session")
def tiny(embedded):
    """160 train / 100 val / 100 test real Fashion-MNIST images (28x28, 1 channel, 10 classes)."""
    return DatasetSplits(name="embedded", classes=embedded.classes, channels=1, image_size=(28, 28),
                         train=_take(embedded.train, 160), val=_take(embedded.val, 100),
                         test=_take(embedded.test, 100), info={})
