import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from reslab import create_model
from reslab.analysis import calibrate_bn, path_gradient_vectors, path_gradients, path_length_distribution
from reslab.errors import ReslabError


def test_path_length_distribution_is_binomial_exactly():
    for n in (0, 1, 3, 54):
        p = path_length_distribution(n)
        assert p == [math.comb(n, k) / 2 ** n for k in range(n + 1)]
        assert sum(p) == pytest.approx(1.0, abs=1e-15)
    assert path_length_distribution(3) == [1 / 8, 3 / 8, 3 / 8, 1 / 8]
    with pytest.raises(ReslabError):
        path_length_distribution(-1)


@pytest.mark.parametrize("name,kw", [("resnet20", {"layers": (1, 1, 1)}),
                                     ("preact_resnet164", {"layers": (1, 1, 1), "block": "basic", "shortcut": "B"})])
def test_the_2_to_the_n_path_gradients_add_up_to_the_whole_gradient(images, name, kw):
    x, y = images[0][:8].double(), images[1][:8]
    torch.manual_seed(0)
    model = calibrate_bn(create_model(name, num_classes=10, in_chans=1, **kw).double(), x)
    subsets = [set(c) for k in range(4) for c in itertools.combinations(range(3), k)]
    total = sum(path_gradient_vectors(model, x, y, subsets))
    # the whole gradient at the first block's input, without any gating
    kept = {}
    first = model.stages[0][0]
    h = first.register_forward_pre_hook(lambda _m, inp: (kept.setdefault("x", inp[0].detach().requires_grad_(True)),))
    (whole,) = torch.autograd.grad(F.cross_entropy(model(x), y), kept["x"])
    h.remove()
    torch.testing.assert_close(total, whole, rtol=1e-9, atol=1e-12)
    # the shortcut-only path is not the whole gradient: the gates do route
    only_skip = next(path_gradient_vectors(model, x, y, [set()]))
    assert (only_skip - whole).norm() > 1e-3 * whole.norm()


def test_path_gradients_sample_each_length_and_refuse_plain_nets(images):
    x, y = images[0][:8], images[1][:8]
    torch.manual_seed(0)
    model = calibrate_bn(create_model("resnet20", num_classes=10, in_chans=1), x)
    g = path_gradients(model, x, y, samples=2)
    assert sorted(g) == list(range(10)) and all(v > 0 for v in g.values())
    with pytest.raises(ReslabError, match="plain net"):
        path_gradients(create_model("plain20", num_classes=10, in_chans=1), x, y)
    with pytest.raises(ReslabError, match="no residual blocks"):
        path_gradients(create_model("lenet5", num_classes=10, in_chans=1), x, y)
