"""LeNet-5 against its paper."""

import pytest
import torch
from torch import nn

import reslab
from reslab.errors import ReslabError
from reslab.models import model_info
from reslab.models.lenet import LENET5_C3_TABLE, PartialConv2d, Subsampling
from tests.models._helpers import assert_feature_maps, n_params

# Table I of the paper as printed: row i = S2 map i, column j = C3 map j.
PAPER_TABLE_I = """
X...XXX..XXXX.XX
XX...XXX..XXXX.X
XXX...XXX..X.XXX
.XXX..XXXX..X.XX
..XXX..XXXX.XX.X
...XXX..XXXX.XXX
""".split()


def test_lenet5_layer_parameters_match_the_paper():
    m = reslab.create_model("lenet5")
    layers = {"C1": m.stem.c1, "S2": m.stem.s2, "C3": m.stages[0].c3, "S4": m.stages[0].s4,
              "C5": m.stages[1].c5, "F6": m.head.mlp.fc6}
    counts = {name: n_params(layer) for name, layer in layers.items()}
    assert counts == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert isinstance(m.stem.s2, Subsampling) and isinstance(m.stages[0].c3, PartialConv2d)
    # The paper's 840-weight RBF output layer is replaced by a linear classifier (850 parameters).
    assert n_params(m) == sum(counts.values()) + 84 * 10 + 10
    # Multiply-adds: the paper's connection counts less biases and the subsampling layers, plus the
    # multiplies by zero of C3's dense kernel (10x10 positions x 36 unconnected pairs x 25).
    connections = {"C1": 122_304, "C3": 151_600, "C5": 48_120, "F6": 10_164, "output": 840}
    biases = {"C1": 28 * 28 * 6, "C3": 10 * 10 * 16, "C5": 120, "F6": 84, "output": 0}
    paper_macs = sum(connections[k] - biases[k] for k in connections)
    assert sum(connections.values()) + 5_880 + 2_000 == 340_908  # with S2 and S4: the paper's total
    assert paper_macs == 326_520
    assert model_info(m).macs == paper_macs + 10 * 10 * (96 - 60) * 25


def test_lenet5_c3_follows_table_i():
    table = [[PAPER_TABLE_I[i][j] == "X" for i in range(6)] for j in range(16)]
    assert [tuple(i for i in range(6) if col[i]) for col in table] == list(LENET5_C3_TABLE)
    torch.manual_seed(0)
    c3 = reslab.create_model("lenet5").stages[0].c3
    assert tuple(c3.weight.shape) == (60, 5, 5)
    x = torch.randn(1, 6, 14, 14)
    with torch.no_grad():
        base = c3(x)
        for i in range(6):
            bumped = x.clone()
            bumped[:, i] += 1.0
            changed = (c3(bumped) - base).abs().flatten(2).amax(-1)[0] > 0
            assert changed.tolist() == [table[j][i] for j in range(16)], f"S2 map {i}"


def test_lenet5_scaled_tanh_and_modern_variant():
    m = reslab.create_model("lenet5")
    act = m.stem.act1
    one = torch.tensor([-1.0, 0.0, 1.0])
    torch.testing.assert_close(act(one), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(act(torch.tensor([3.0])), 1.7159 * torch.tanh(torch.tensor([2.0])))
    modern = reslab.create_model("lenet5", c3_table=False, pool="max", act="relu")
    kinds = {type(mod) for mod in modern.modules()}
    assert nn.MaxPool2d in kinds and nn.ReLU in kinds and Subsampling not in kinds and PartialConv2d not in kinds
    assert n_params(modern.stages[0].c3) == 16 * 6 * 25 + 16
    assert n_params(modern) == 61_706  # the figure usually quoted for this variant
    assert modern(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.fixture
def one_thread():
    # Tiny ops on a shared 2-core machine: two threads measured 8-18 s for this loop, one 1 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_lenet5_as_published_learns(one_thread):
    # Gradients reach every trainable piece (subsampling coefficients, the partial C3): the paper's
    # network memorises a small batch.
    torch.manual_seed(0)
    m = reslab.create_model("lenet5")
    x, y = torch.randn(32, 1, 32, 32), torch.randint(0, 10, (32,))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert (m(x).argmax(1) == y).float().mean() > 0.9
    assert (m.stem.s2.weight != 0.25).all() and (m.stages[0].s4.bias != 0).all()


def test_features_only_channels_and_strides():
    assert_feature_maps("lenet5", 32, [(6, 2, 14), (16, 4, 5), (120, 4, 1)])


def test_forward_features_head_and_classifier_reset():
    torch.manual_seed(0)
    m = reslab.create_model("lenet5").eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (3, 120, 1, 1)
        assert m.forward_head(feats, pre_logits=True).shape == (3, 84)
        torch.testing.assert_close(m.forward_head(feats), m(x))
        m.reset_classifier(5)
        assert m(x).shape == (3, 5) and m.get_classifier().in_features == 84


@pytest.mark.parametrize("options,message", [
    ({"pool": "median"}, "pool must be"),
    ({"act": "gelu"}, "act must be"),
    ({"widths": (8, 16, 120)}, "Table I.*c3_table=False"),
])
def test_bad_options_are_rejected(options, message):
    with pytest.raises(ReslabError, match=message):
        reslab.create_model("lenet5", **options)


def test_other_widths_with_a_full_c3():
    assert reslab.create_model("lenet5", widths=(8, 16, 120), c3_table=False).stages[0].c3.in_channels == 8
