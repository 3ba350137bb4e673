"""Detection backbones and detectors against torchvision's own: the same outputs from the same
weights, the same parameters and freezing, torchvision's detectors taking the backbone as is, and
classifier weights (reslab's and torchvision's, from runs and files) loaded into the backbone."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import detection as tvdet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

import reslab
from reslab import rundir
from reslab.errors import ReslabError
from reslab.models.detection import DetectionBackbone, Detector, detection_backbone
from reslab.models.weights import save_weights, torchvision_to_reslab_key
from reslab.train.init import init_weights
from tests.models._helpers import _no_init, n_params, randomise, unfilled_model

TINY = {"widths": (8, 16, 32, 64)}  # resnet18's layout at an eighth of its width: seconds become milliseconds
NARROW = {"fpn_channels": 32, **TINY}  # and a pyramid an eighth as wide, which the heads take their width from
TV_BUILDERS = {"fasterrcnn": tvdet.fasterrcnn_resnet50_fpn, "maskrcnn": tvdet.maskrcnn_resnet50_fpn,
               "retinanet": tvdet.retinanet_resnet50_fpn}
RCNN_LOSSES = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}


def _close(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float reordering: 1e-5 of the largest magnitude (on a signal that is not vanishing)."""
    assert got.shape == expected.shape
    scale = expected.abs().max().item() if expected.numel() else 0.0
    if expected.numel():
        assert expected.float().std() > 0 or expected.numel() == 1, "constant output: the check would be weak"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * max(scale, 1e-6))


def _targets(h: int = 64, w: int = 80, masks: bool = True) -> list[dict[str, torch.Tensor]]:
    t = {"boxes": torch.tensor([[6.0, 8.0, 40.0, 60.0], [44.0, 10.0, 76.0, 50.0]]), "labels": torch.tensor([1, 1])}
    if masks:
        m = torch.zeros(2, h, w, dtype=torch.uint8)
        m[0, 8:60, 6:40] = 1
        m[1, 10:50, 44:76] = 1
        t["masks"] = m
    return [t]


# -- detection_backbone ---------------------------------------------------------------------------

@torch.no_grad()
def test_resnet50_fpn_matches_torchvision_with_the_same_weights():
    torch.manual_seed(0)
    classifier = randomise(torchvision.models.resnet50())  # BN statistics and biases not at their defaults
    state = classifier.state_dict()
    ours = detection_backbone("resnet50", stride_in="3x3", weights=state)
    tv = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=3)
    tv.body.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    ours.fpn.load_state_dict(tv.fpn.state_dict())
    assert ours.out_channels == tv.out_channels == 256
    report = ours.load_report
    assert report.ignored == ["head.fc.weight", "head.fc.bias"] and report.missing == []
    assert len(report.loaded) == len(ours.body.state_dict()) and "loaded 265 tensors" in report.summary
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    got, expected = ours.eval()(x), tv.eval()(x)
    assert list(got) == list(expected) == ["0", "1", "2", "3", "pool"]
    for k in expected:
        _close(got[k], expected[k])


@torch.no_grad()
def test_frozen_batch_norm_takes_the_statistics_of_the_loaded_classifier():
    source = randomise(reslab.create_model("resnet18", **TINY))
    ours = detection_backbone("resnet18", weights=source.state_dict(), **TINY)
    frozen = {n: m for n, m in ours.body.named_modules() if isinstance(m, FrozenBatchNorm2d)}
    bns = {n: m for n, m in source.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert sorted(frozen) == sorted(bns) and not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    for name, bn in bns.items():
        f = frozen[name]
        assert f.eps == bn.eps
        for attr in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(f, attr), getattr(bn, attr)), (name, attr)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in detection_backbone("resnet18", frozen_bn=False, **TINY).modules())


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_trainable_stages_freeze_what_torchvisions_trainable_layers_freeze(frozen_bn):
    norm = FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d
    with torch.device("meta"), _no_init():
        for trainable in range(6):
            ours = detection_backbone("resnet18", trainable_stages=trainable, frozen_bn=frozen_bn)
            tv = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=norm, trainable_layers=trainable)
            expected = {torchvision_to_reslab_key(k): p.requires_grad for k, p in tv.body.named_parameters()}
            assert {k: p.requires_grad for k, p in ours.body.named_parameters()} == expected, trainable
            assert all(p.requires_grad for p in ours.fpn.parameters())
        with pytest.raises(ReslabError, match=r"trainable_stages must be 0\.\.5 for resnet18"):
            detection_backbone("resnet18", trainable_stages=6)


# Few proposals, RoIs and candidates: the heads' arithmetic, not the backbone's, dominates at this size.
SMALL = {tvdet.FasterRCNN: {"rpn_pre_nms_top_n_train": 64, "rpn_post_nms_top_n_train": 64, "rpn_pre_nms_top_n_test": 64,
                            "rpn_post_nms_top_n_test": 64, "box_batch_size_per_image": 16, "box_detections_per_img": 8},
         tvdet.RetinaNet: {"topk_candidates": 64, "detections_per_img": 8},
         tvdet.FCOS: {"topk_candidates": 64, "detections_per_img": 8}}
SMALL[tvdet.MaskRCNN] = SMALL[tvdet.FasterRCNN]


@pytest.mark.parametrize("cls", [tvdet.FasterRCNN, tvdet.MaskRCNN, tvdet.RetinaNet, tvdet.FCOS])
def test_torchvision_detectors_take_the_backbone_as_is(cls):
    torch.manual_seed(0)
    backbone = detection_backbone("resnet18", **NARROW)
    model = cls(backbone, num_classes=2, min_size=64, max_size=96, **SMALL[cls])
    images = [torch.rand(3, 64, 80)]
    losses = model(images, _targets(masks=cls is tvdet.MaskRCNN))
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    body = dict(backbone.body.named_parameters())
    assert all(p.grad is None for k, p in body.items() if k.startswith(("stem.", "stages.0.")))  # frozen
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for k, p in body.items() if k.startswith("stages.3."))
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 1 and {"boxes", "labels", "scores"} <= set(out[0])


@torch.no_grad()
def test_without_fpn_the_last_map_serves_a_one_level_detector():
    backbone = detection_backbone("resnet18", fpn=False, **TINY)
    assert isinstance(backbone, DetectionBackbone) and backbone.out_channels == 64 and backbone.body.out_indices == (4,)
    assert backbone(torch.zeros(1, 3, 64, 96)).shape == (1, 64, 2, 3)
    model = tvdet.FasterRCNN(backbone, num_classes=2, min_size=64, max_size=96,
                             rpn_anchor_generator=AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),)),
                             box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], 7, 2)).eval()
    assert "boxes" in model([torch.rand(3, 64, 80)])[0]


def test_weights_from_a_run_a_safetensors_file_and_a_pth_file(tmp_path):
    source = randomise(reslab.create_model("resnet18", num_classes=10, **TINY))
    run = tmp_path / "r18"
    save_weights(source, rundir.weights_file(run, "best"))
    (run / "config.yaml").write_text("model: resnet18\n")
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    for weights, expected in ((run, source.stem.conv.weight), (rundir.weights_file(run, "best"), source.stem.conv.weight)):
        backbone = detection_backbone("resnet18", weights=weights, **TINY)
        assert torch.equal(backbone.body.stem.conv.weight, expected)
        assert sorted(backbone.load_report.ignored) == ["head.fc.bias", "head.fc.weight"]
    assert "(resnet18, best checkpoint)" in detection_backbone("resnet18", weights=run, **TINY).load_report.summary
    backbone = detection_backbone("resnet18", weights=tmp_path / "tv.pth")
    assert torch.equal(backbone.body.stages[3][1].conv2.weight, tv.layer4[1].conv2.weight)


def test_weights_of_another_classifier_are_refused_naming_both(tmp_path):
    path = save_weights(reslab.create_model("resnet20"), tmp_path / "r20.safetensors")
    with pytest.raises(ReslabError, match=r"weights of resnet20 in .*r20\.safetensors do not fit the resnet18 backbone"):
        detection_backbone("resnet18", weights=path, **TINY)
    with pytest.raises(ReslabError, match="stride_in='3x3'"):  # torchvision's v1.5 weights into the paper's v1
        detection_backbone("resnet50", weights=torchvision.models.resnet50().state_dict())
    with pytest.raises(ReslabError, match="in_chans must be 3"):
        reslab.create_model("fasterrcnn_resnet18_fpn", in_chans=1)


# -- registered detectors -------------------------------------------------------------------------

def _tv_to_ours(key: str) -> str:
    body = "backbone.body."
    return "net." + (body + torchvision_to_reslab_key(key[len(body):]) if key.startswith(body) else key)


@pytest.mark.parametrize("kind", list(TV_BUILDERS))
def test_resnet50_detectors_have_torchvisions_parameters(kind):
    with torch.device("meta"), _no_init():
        tv = TV_BUILDERS[kind](weights=None, weights_backbone=None, num_classes=91)  # BN, everything trainable
        ours = reslab.create_model(f"{kind}_resnet50_fpn", stride_in="3x3", num_classes=91, frozen_bn=False,
                                   trainable_stages=5)
        frozen = reslab.create_model(f"{kind}_resnet50_fpn", stride_in="3x3", num_classes=91)
    assert n_params(ours) == n_params(tv)
    assert {_tv_to_ours(k): v.shape for k, v in tv.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    bn_affine = sum(m.weight.numel() * 2 for m in tv.backbone.body.modules() if isinstance(m, nn.BatchNorm2d))
    assert n_params(frozen) == n_params(tv) - bn_affine  # FrozenBatchNorm2d keeps them as buffers


@pytest.fixture(scope="module")
def tv_and_ours():
    """torchvision's three ResNet-50 detectors, randomised, and reslab's with their weights."""
    pairs = {}
    for kind, build in TV_BUILDERS.items():
        torch.manual_seed(0)
        opts = {"num_classes": 3, "min_size": 64, "max_size": 96, "box_detections_per_img": 4}
        tv_opts = {k if kind != "retinanet" or k != "box_detections_per_img" else "detections_per_img": v for k, v in opts.items()}
        tv = randomise(build(weights=None, weights_backbone=None, **tv_opts))
        if kind == "retinanet":  # its prior makes every score 0.01, under the 0.05 threshold: no detections to compare
            nn.init.zeros_(tv.head.classification_head.cls_logits.bias)
        ours = unfilled_model(f"{kind}_resnet50_fpn", stride_in="3x3", frozen_bn=False, trainable_stages=5, **opts)
        ours.load_torchvision(tv.state_dict())
        for m in (tv, ours.net):
            if kind != "retinanet":  # 100 proposals, not 1000: the box head's arithmetic is most of the cost
                m.rpn._post_nms_top_n["testing"] = 100
        pairs[kind] = (tv.eval(), ours.eval())
    return pairs


@pytest.mark.parametrize("kind", list(TV_BUILDERS))
@torch.no_grad()
def test_detections_equal_torchvisions_with_its_weights(kind, tv_and_ours):
    tv, ours = tv_and_ours[kind]
    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(2))]
    expected, got = tv(images)[0], ours(images)[0]
    assert len(expected["boxes"]) > 0 and set(got) == set(expected)
    for k in expected:
        if k == "labels":
            assert torch.equal(got[k], expected[k])
        else:
            _close(got[k], expected[k])


@pytest.fixture(scope="module")
def trained():
    """maskrcnn_resnet18_fpn (at an eighth of its width) after two SGD steps on two tiny images."""
    torch.manual_seed(0)
    model = reslab.create_model("maskrcnn_resnet18_fpn", num_classes=2, min_size=64, max_size=96,
                                box_batch_size_per_image=16, rpn_batch_size_per_image=32, **NARROW)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    images = [torch.rand(3, 64, 80), torch.rand(3, 64, 80)]
    targets = _targets() + _targets()
    model.train()
    history = []
    for _ in range(2):
        losses = model(images, targets)
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    return model, before, history


def test_detector_contract_and_two_training_steps(trained):
    model, before, history = trained
    assert isinstance(model, Detector) and model.kind == "maskrcnn" and model.has_masks and model.num_classes == 2
    assert model.model_name == "maskrcnn_resnet18_fpn"
    assert all(set(h) == RCNN_LOSSES | {"loss_mask"} for h in history)
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    after = model.state_dict()
    assert not torch.equal(after["net.roi_heads.mask_predictor.mask_fcn_logits.weight"],
                           before["net.roi_heads.mask_predictor.mask_fcn_logits.weight"])
    assert not torch.equal(after["net.backbone.body.stages.3.0.conv1.weight"], before["net.backbone.body.stages.3.0.conv1.weight"])
    assert torch.equal(after["net.backbone.body.stem.conv.weight"], before["net.backbone.body.stem.conv.weight"])
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 80)])
    n = len(out[0]["boxes"])
    assert out[0]["masks"].shape == (n, 1, 64, 80) and out[0]["scores"].shape == (n,)
    with pytest.raises(ReslabError, match="float RGB images"):
        model([torch.zeros(3, 64, 80, dtype=torch.uint8)])


def test_min_size_none_keeps_the_image_size():
    model = reslab.create_model("fasterrcnn_resnet18_fpn", num_classes=2, min_size=None, **NARROW).eval()
    images = [torch.rand(3, 50, 70)]
    transformed, _ = model.net.transform(images)
    assert transformed.image_sizes == [(50, 70)] and transformed.tensors.shape[-2:] == (64, 96)  # padded to /32
    resized, _ = reslab.create_model("fasterrcnn_resnet18_fpn", min_size=100, **NARROW).eval().net.transform(images)
    assert resized.image_sizes == [(100, 140)]


def test_state_dict_round_trips_through_safetensors_with_frozen_bn_buffers(trained, tmp_path):
    model = trained[0]
    with torch.no_grad():
        randomise(model)  # biases; FrozenBatchNorm2d is no BatchNorm2d: set its buffers apart from their defaults
        for i, m in enumerate(m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)):
            m.running_var.fill_(1.0 + i / 10)
    path = save_weights(model, tmp_path / "det.safetensors")
    fresh = reslab.create_model("maskrcnn_resnet18_fpn", num_classes=2, **NARROW)
    reslab.load_weights(fresh, path)
    key = "net.backbone.body.stages.2.1.bn2.running_var"
    assert key in fresh.state_dict() and fresh.state_dict()[key][0] != 1.0
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())


def test_registered_and_resolved_names():
    assert "maskrcnn_resnet50_fpn" in reslab.list_models("*_fpn") and "fasterrcnn_densenet121_fpn" not in reslab.list_models()
    entry = reslab.models.get_model_entry("fasterrcnn_resnet152_fpn")
    assert entry.task == "detect" and entry.family == "detection" and entry.paper.startswith("Ren et al. 2015")
    assert reslab.models.get_model_entry("retinanet_resnet18_fpn").paper.startswith("Lin et al. 2017")
    with torch.device("meta"), _no_init():
        retina = reslab.create_model("retinanet_resnet18_fpn")
    assert retina.backbone.body.out_indices == (2, 3, 4) and retina.backbone.num_maps == 5  # P3-P7
    with pytest.raises(ReslabError, match="does not accept 'rpn_batch_size_per_image'"):
        reslab.create_model("retinanet_resnet18_fpn", rpn_batch_size_per_image=8)


# -- --init-from ----------------------------------------------------------------------------------

def _run(tmp_path, name, **arch):
    model = randomise(reslab.create_model(name, num_classes=10, **arch))
    run = tmp_path / name
    save_weights(model, rundir.weights_file(run, "last"))
    (run / "config.yaml").write_text(f"model: {name}\n")
    return model, run


def test_init_from_a_classifier_run_loads_the_detectors_backbone(tmp_path):
    source, run = _run(tmp_path, "resnet18", **TINY)
    model = reslab.create_model("maskrcnn_resnet18_fpn", num_classes=2, **NARROW)
    said = init_weights(model, str(run))
    # 20 convolutions and 20 FrozenBatchNorm2d of 4 tensors each (the classifier's BN counters have no place there)
    assert said == (f"loaded 100 tensors of {run} (resnet18, last checkpoint) into the resnet18 backbone; "
                    "ignored: head.fc.bias, head.fc.weight")
    body = model.backbone.body
    assert torch.equal(body.stages[3][1].conv2.weight, source.stages[3][1].conv2.weight)
    assert torch.equal(body.stages[0][0].bn1.running_mean, source.stages[0][0].bn1.running_mean)  # into FrozenBatchNorm2d


def test_init_from_a_mismatched_classifier_is_one_line(tmp_path):
    _, run = _run(tmp_path, "resnet20")
    model = reslab.create_model("maskrcnn_resnet18_fpn", num_classes=2, **NARROW)
    with pytest.raises(ReslabError) as e:
        init_weights(model, str(run))
    msg = str(e.value)
    assert "\n" not in msg and "resnet20" in msg and "maskrcnn_resnet18_fpn" in msg and "resnet18 backbone" in msg


@torch.no_grad()
def test_model_info_and_the_size_check_measure_a_detector():
    torch.manual_seed(0)
    model = reslab.create_model("fasterrcnn_resnet18_fpn", num_classes=2, min_size=None, **NARROW)
    info = reslab.model_info(model, (3, 64, 64))
    rows = {r.name: r for r in info.rows}
    assert info.params == n_params(model) and info.macs > 0
    assert rows["net.backbone.body.stem"].output_shape == (8, 16, 16) and rows["net.backbone.body.stem"].macs > 0
    assert rows["net.roi_heads.box_predictor"].output_shape == (2,)  # the class scores of each RoI
    assert reslab.models.check_model_size("fasterrcnn_resnet18_fpn", num_classes=2, in_chans=3, **NARROW) == info.params
