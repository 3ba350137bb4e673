"""reslab: deep residual learning for image recognition.

The public API::

    import reslab
    model = reslab.create_model("resnet56", num_classes=10)
    reslab.list_models("resnet*")
    print(reslab.model_info(model).table())
"""

from .errors import ReslabError, UnknownModelError
from .models import (
    create_model,
    list_models,
    load_torchvision_state_dict,
    load_weights,
    model_info,
    register_model,
    save_weights,
)

from .data import load_dataset
from .evaluate import evaluate
from .train import make_config
from .train.loop import fit

__version__ = "0.1.0"

__all__ = [
    "ReslabError", "UnknownModelError", "create_model", "list_models", "load_torchvision_state_dict",
    "load_weights", "model_info", "register_model", "save_weights", "load_dataset", "evaluate", "fit",
    "make_config", "__version__",
]
