"""safetensors round trip and clear errors for weights of another model."""

import pytest
import torch

import reslab
from reslab.errors import ReslabError


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    a = reslab.create_model("resnet20").eval()
    path = reslab.save_weights(a, tmp_path / "w.safetensors")
    b = reslab.create_model("resnet20").eval()
    reslab.load_weights(b, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_weights_for_another_model_are_named(tmp_path):
    path = reslab.save_weights(reslab.create_model("resnet20"), tmp_path / "w.safetensors")
    with pytest.raises(ReslabError, match=r"model resnet20.*do not fit resnet32.*missing"):
        reslab.load_weights(reslab.create_model("resnet32"), path)
    with pytest.raises(ReslabError, match="shape mismatch.*head.fc.weight"):
        reslab.load_weights(reslab.create_model("resnet20", num_classes=100), path)


def test_corrupt_and_missing_files(tmp_path):
    path = reslab.save_weights(reslab.create_model("resnet20"), tmp_path / "w.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReslabError, match="not a readable safetensors file"):
        reslab.load_weights(reslab.create_model("resnet20"), tmp_path / "cut.safetensors")
    with pytest.raises(ReslabError, match="not found"):
        reslab.load_weights(reslab.create_model("resnet20"), tmp_path / "nope.safetensors")


def test_torchvision_keys_all_map():
    import torchvision

    tv = torchvision.models.resnet50()
    ours = reslab.create_model("resnet50", stride_in="3x3")
    from reslab.models.weights import torchvision_to_reslab_key

    mapped = {torchvision_to_reslab_key(k) for k in tv.state_dict()}
    assert mapped == set(ours.state_dict())
    with pytest.raises(ReslabError, match="do not fit resnet34"):
        reslab.load_torchvision_state_dict(reslab.create_model("resnet34"), tv.state_dict())


@pytest.mark.parametrize("name", ["resnet50", "resnet101", "resnet152", "wide_resnet50_2"])
def test_torchvision_bottleneck_weights_refused_by_the_paper_v1_default(name):
    """torchvision's bottleneck ResNets are v1.5 (stride in the 3x3): the same shapes as the paper's
    default (stride in the first 1x1), so a silent load would give other outputs (up to 1e2-1e9 apart
    with random BN statistics). The load must refuse and name the option that fixes it."""
    import torchvision

    tv = getattr(torchvision.models, name)(weights=None).eval()
    with pytest.raises(ReslabError, match=rf"create_model\('{name}', stride_in='3x3'\).*--arch stride_in=3x3"):
        reslab.load_torchvision_state_dict(reslab.create_model(name), tv.state_dict())
    if name != "resnet50":
        return  # the equal-outputs check of every depth lives in tests/models/test_resnet.py
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial BN statistics, so a misplaced stride could not hide
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.1, 0.1)
    ours = reslab.load_torchvision_state_dict(reslab.create_model(name, stride_in="3x3").eval(), tv.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), rtol=0, atol=1e-5)
