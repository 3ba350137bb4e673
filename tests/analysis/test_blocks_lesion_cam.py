import copy

import pytest
import torch

from reslab import create_model, evaluate_run, load_run
from reslab.analysis import block_ratios, error_rate, grad_cam, lesion_errors, random_lesion_errors, residual_blocks
from reslab.analysis.structure import zero_branches


def _net(name, seed=0, **kw):
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_chans=1, **kw).eval()


def test_block_ratio_is_branch_norm_over_input_norm(images):
    x = images[0][:6]
    model = _net("resnet20", layers=(2, 1, 1))
    names, ratios = block_ratios(model, x)
    assert names == [n for n, _ in residual_blocks(model)] and ratios.shape == (6, 4)
    with torch.no_grad():
        h = model.stem(x)
        for i, block in enumerate(b for stage in model.stages for b in stage):
            f = block.branch(h)  # post-activation: the branch before the addition
            expect = f.flatten(1).double().norm(dim=1) / h.flatten(1).double().norm(dim=1)
            torch.testing.assert_close(ratios[:, i], expect, rtol=1e-5, atol=0)
            h = block(h)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    """The fixture run (resnet20 trained for a few steps on the embedded set) and 100 real test images."""
    import shutil

    from .conftest import FIXTURE

    run = tmp_path_factory.mktemp("lesion") / "r20"
    shutil.copytree(FIXTURE, run)
    loaded = load_run(run, "best")
    with torch.no_grad():
        x = loaded.normalizer(tiny.test.images)
    return run, loaded, x, tiny.test.labels, tiny


def test_deleting_no_block_is_the_eager_test_error(trained):
    run, loaded, x, y, tiny = trained
    eager = evaluate_run(run, checkpoint="best", splits=tiny).result.top1_err
    assert lesion_errors(loaded.model, x, y, [[]]) == [pytest.approx(eager, abs=1e-9)]


def test_deleting_a_block_is_the_net_with_that_residual_branch_zeroed(trained):
    _, loaded, x, y, _ = trained
    blocks = [b for _, b in residual_blocks(loaded.model)]
    for i in (0, 3, 8):  # the first block, a downsampling one (zero-pad shortcut), the last
        twin = copy.deepcopy(loaded.model)
        bn = [b for _, b in residual_blocks(twin)][i].bn2  # the branch's last layer: BN with zero scale and shift
        torch.nn.init.zeros_(bn.weight)
        torch.nn.init.zeros_(bn.bias)
        assert lesion_errors(loaded.model, x, y, [[i]]) == [error_rate(twin, x, y)]
        with torch.no_grad(), zero_branches([blocks[i]]):
            deleted = loaded.model(x)
        with torch.no_grad():
            torch.testing.assert_close(deleted, twin(x), rtol=1e-5, atol=1e-6)
            assert (deleted - loaded.model(x)).abs().max() > 1e-3  # the block mattered
    torch.manual_seed(0)
    sets = random_lesion_errors(loaded.model, x, y, [1, 3], samples=2)
    assert sorted(sets) == [1, 3] and all(len(v) == 2 for v in sets.values())
    assert len(blocks) == 9


def test_grad_cam_is_the_hand_computation(images):
    x = images[0][3]
    model = _net("resnet20", layers=(1, 1, 1))
    cam, cls, raw = grad_cam(model, x, target=2)
    assert cls == 2 and cam.shape == x.shape[-2:]
    a = model.stages(model.stem(x[None])).detach().requires_grad_(True)
    score = model.forward_head(model.final(a))[0, 2]
    (g,) = torch.autograd.grad(score, a)
    alpha = g[0].mean(dim=(1, 2))
    expect = torch.relu((alpha[:, None, None] * a[0]).sum(0)).detach()
    torch.testing.assert_close(raw, expect, rtol=1e-5, atol=1e-7)
    assert float(cam.max()) == pytest.approx(1.0) and float(cam.min()) >= 0
    _, predicted, _ = grad_cam(model, x)
    assert predicted == int(model(x[None]).argmax())


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from reslab.analysis.kinds import spearman

    gen = torch.Generator().manual_seed(0)
    for xs, ys in ([torch.rand(9, generator=gen).tolist(), torch.rand(9, generator=gen).tolist()],
                   [[1.0, 2.0, 2.0, 3.0, 5.0], [0.5, 0.1, 0.1, 0.9, 0.7]]):
        assert spearman(xs, ys) == pytest.approx(spearmanr(xs, ys).statistic, rel=1e-12)
