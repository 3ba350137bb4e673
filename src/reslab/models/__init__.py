"""Architectures: one registry, spec-driven families, the backbone contract.

Importing this package imports every family module, which registers its names; ``registry``
itself imports no family, so there is no import circle. Add a new family module to the import
below.
"""

from . import alexnet, densenet, googlenet, inception_v3, lenet, resnet, vgg  # noqa: F401  (registers the names)
from .base import Backbone, ClassifierHead, FeatureInfo, SpecBuilder
from .info import ModelInfo, model_info
from .registry import create_model, get_model_entry, list_models, register_model
from .resnet import ResNet, ResNetSpec
from .size import check_model_size
from .weights import load_torchvision_state_dict, load_weights, save_weights

__all__ = [
    "Backbone", "ClassifierHead", "FeatureInfo", "SpecBuilder", "ModelInfo", "model_info",
    "create_model", "get_model_entry", "list_models", "register_model", "ResNet", "ResNetSpec",
    "load_torchvision_state_dict", "load_weights", "save_weights", "check_model_size",
]
