"""reslab: deep residual learning for image recognition.

The public API::

    import reslab
    model = reslab.create_model("resnet56", num_classes=10)
    reslab.list_models("resnet*")
    print(reslab.model_info(model).table())
"""

from ._version import __version__
from .analysis import analyze
from .config import RunConfig, make_config, resolve_config
from .data import load_dataset
from .dense import evaluate_dense_run, predict_masks
from .errors import ReslabError, UnknownModelError
from .evaluate import evaluate, evaluate_run
from .models import (
    Detector,
    create_model,
    detection_backbone,
    list_models,
    load_torchvision_state_dict,
    load_weights,
    model_info,
    register_model,
    save_weights,
)
from .predict import load_run, predict
from .rundir import read_run
from .superres import evaluate_sr_run, predict_sr
from .train import fit, train_or_reuse

__all__ = [
    "ReslabError", "UnknownModelError", "create_model", "list_models", "load_torchvision_state_dict",
    "load_weights", "model_info", "register_model", "save_weights", "load_dataset", "evaluate", "evaluate_run",
    "fit", "train_or_reuse", "RunConfig", "make_config", "resolve_config", "load_run", "predict", "read_run",
    "evaluate_dense_run", "predict_masks", "evaluate_sr_run", "predict_sr", "analyze", "__version__",
    "detection_backbone", "Detector",
]
