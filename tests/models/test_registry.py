"""The registry: names, overrides, errors. (That every registered model runs is test_contract.py.)"""

import subprocess
import sys

import pytest
import torch

import reslab
from reslab.errors import ReslabError, UnknownModelError
from reslab.models import list_models, register_model

EXPECTED_RESNET_NAMES = (
    [f"resnet{d}" for d in (18, 20, 32, 34, 44, 50, 56, 101, 110, 152, 200, 1202)]
    + [f"plain{d}" for d in (18, 20, 32, 34, 44, 56, 110)]
    + [f"preact_resnet{d}" for d in (18, 34, 50, 101, 110, 152, 164, 200, 1001)]
    + ["wrn16_8", "wrn28_10", "wrn40_4", "wide_resnet50_2", "wide_resnet101_2"]
)


def test_every_issue_name_is_registered():
    missing = set(EXPECTED_RESNET_NAMES) - set(list_models())
    assert not missing


def test_list_models_globs_and_sorts_naturally():
    names = list_models("resnet*")
    assert names[:4] == ["resnet18", "resnet20", "resnet32", "resnet34"]
    assert "plain20" not in names and names[-1] == "resnet1202"
    assert list_models("nothing-like-this*") == []


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean.*resnet56"):
        reslab.create_model("resnet65")
    with pytest.raises(KeyError):  # also a KeyError, as a dict lookup would be
        reslab.create_model("resnt56")


def test_bad_override_is_rejected_by_name():
    with pytest.raises(ReslabError, match="'colour'"):
        reslab.create_model("resnet56", colour="red")
    with pytest.raises(ReslabError, match="shortcut must be"):
        reslab.create_model("resnet56", shortcut="Z")
    with pytest.raises(ReslabError, match="num_classes"):
        reslab.create_model("resnet56", num_classes=-1)


def test_wrong_input_channels_give_clear_error():
    m = reslab.create_model("resnet20")
    with pytest.raises(ReslabError, match=r"expects input of shape \(N, 3, H, W\); got \(2, 1, 32, 32\)"):
        m(torch.randn(2, 1, 32, 32))
    gray = reslab.create_model("resnet20", in_chans=1)
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_duplicate_registration_raises():
    def resnet20(num_classes: int = 10):  # noqa: ARG001
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet20)


def test_overrides_reach_the_module():
    m = reslab.create_model("resnet56", num_classes=100, shortcut="B", in_chans=1)
    assert m.head.fc.out_features == 100 and m.spec.shortcut == "B" and m.in_chans == 1
    assert m.model_name == "resnet56"


def test_registry_is_complete_from_a_fresh_interpreter():
    # Importing reslab.models.registry runs the package __init__, which imports every family; the
    # registry module itself imports none of them (no import circle).
    code = ("from reslab.models.registry import create_model, list_models; "
            "m = create_model('resnet20'); print(len(list_models()), m.model_name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(list_models())), "resnet20"]


def test_entries_carry_their_task():
    from reslab.models.registry import make_entry

    assert reslab.models.get_model_entry("resnet56").task == "classify"
    assert reslab.models.get_model_entry("unet").task == "segment"
    with pytest.raises(ValueError, match="task must be one of"):
        make_entry(lambda num_classes=2: torch.nn.Identity(), name="x", task="detect-everything")


def test_resolved_names_are_built_but_not_listed():
    # unet_<classifier> comes from the U-Net family's resolver: created on demand, never listed.
    entry = reslab.models.get_model_entry("unet_resnet152")
    assert entry.task == "segment" and entry.name == "unet_resnet152"
    assert reslab.models.get_model_entry("unet_resnet152") is entry
    assert "unet_resnet152" not in list_models() and "unet_resnet152" not in list_models("unet*")
