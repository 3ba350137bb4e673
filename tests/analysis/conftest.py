"""Shared fixtures of the analysis tests: real embedded images (28x28 Fashion-MNIST) and the
fixture run (a resnet20 trained for a few steps)."""
import shutil
from pathlib import Path

import pytest
import torch

FIXTURE = Path(__file__).parent.parent / "fixtures" / "run_v0"


@pytest.fixture(scope="module")
def images(embedded):
    """32 class-stratified test images normalised per channel, and their labels."""
    idx = torch.cat([(embedded.test.labels == c).nonzero().squeeze(1)[:3] for c in range(10)])[:32]
    raw = embedded.test.images[idx].float() / 255
    return (raw - raw.mean()) / raw.std(), embedded.test.labels[idx].clone()


@pytest.fixture()
def run_dir(tmp_path):
    """A writable copy of the fixture run."""
    run = tmp_path / "r20"
    shutil.copytree(FIXTURE, run)
    return run
