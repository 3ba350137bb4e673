"""Architectures: one registry, spec-driven families, the backbone contract.

Importing this package imports every family module, which registers its names; ``registry``
itself imports no family, so there is no import circle. Add a new family module to the import
below.
"""

from . import alexnet, densenet, detection, googlenet, hourglass, inception_v3, lenet, resnet, sr, style, unet, vgg  # noqa: F401  (registers the names)
from .base import AuxOutput, Backbone, ClassifierHead, FeatureInfo, SegmentationModel, SpecBuilder
from .detection import DetectionBackbone, Detector, detection_backbone
from .hourglass import HourglassSpec, StackedHourglass
from .info import ModelInfo, model_info
from .registry import create_model, get_model_entry, list_models, register_model
from .resnet import ResNet, ResNetSpec
from .size import check_model_size
from .style import StyleNetSpec, StyleTransformNet
from .unet import BackboneUNet, UNet, UNetSpec
from .weights import load_torchvision_state_dict, load_weights, save_weights

__all__ = [
    "AuxOutput", "Backbone", "ClassifierHead", "FeatureInfo", "SegmentationModel", "SpecBuilder", "ModelInfo", "model_info",
    "UNet", "UNetSpec", "BackboneUNet", "DetectionBackbone", "Detector", "detection_backbone", "StackedHourglass", "HourglassSpec",
    "create_model", "get_model_entry", "list_models", "register_model", "ResNet", "ResNetSpec",
    "load_torchvision_state_dict", "load_weights", "save_weights", "check_model_size", "StyleNetSpec", "StyleTransformNet",
]
