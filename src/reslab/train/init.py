"""``--init-from``: start a network from trained weights (transfer), not from its random initialisation.

The source is a reslab run directory (its best checkpoint, else its last), a ``.safetensors`` file,
or a PyTorch ``.pth`` / ``.pt`` state dict such as torchvision's published weights. A U-Net over a
backbone takes a classifier's weights into its encoder (the classifier's head is left out); a
detector (:class:`~reslab.models.detection.Detector`) takes a classifier's weights into its backbone
the same way; a classifier takes a classifier's weights whole, its head too where the class counts
agree; a segmentation network or a detector also takes a run of the same network whole.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReslabError
from ..models import get_model_entry
from ..models.registry import TASK_NOUNS
from ..models.weights import load_state_dict_checked, load_torchvision_state_dict, read_weights

__all__ = ["init_weights", "read_init_source"]


def read_init_source(source: str) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """(tensors, a label naming them for messages, the model name of a source run or None)."""
    return read_weights(source, what="--init-from")


def _classifier_from(model: nn.Module, tensors: dict[str, torch.Tensor], label: str) -> None:
    own = model.state_dict()
    if not any(k in own for k in tensors):  # torchvision's key names
        load_torchvision_state_dict(model, tensors)
        return
    # another class count: the classifier keeps its fresh head
    state = {k: v for k, v in tensors.items() if not (k.startswith("head.") and k in own and own[k].shape != v.shape)}
    for k in own:
        if k.startswith("head.") and k not in state:
            state[k] = own[k]
    load_state_dict_checked(model, state, label)


def init_weights(model: nn.Module, source: str) -> str:
    """Load ``source`` into ``model`` as described in the module docstring; returns a line naming the
    source (for a detector, also what its backbone took and what it left out)."""
    tensors, label, source_model = read_init_source(source)
    name = getattr(model, "model_name", "model")
    task = get_model_entry(str(model.model_name)).task if hasattr(model, "model_name") else "classify"
    source_task = get_model_entry(source_model).task if source_model else "classify"
    if source_task in ("segment", "detect") and not (task == source_task and source_model == name):
        raise ReslabError(f"--init-from {label} is a {source_model} {TASK_NOUNS[source_task]} run; a {name} starts "
                          "from a classifier's weights (a U-Net's encoder, a detector's backbone) or from a run of "
                          "the same network")
    if source_task in ("segment", "detect"):
        load_state_dict_checked(model, tensors, label)
    elif task in ("segment", "detect"):
        load_encoder = getattr(model, "load_encoder", None)
        if load_encoder is None:
            raise ReslabError(f"{getattr(model, 'model_name', 'this model')} has no pretrained encoder to load "
                              f"{label} into; --init-from takes a run of the same network")
        # reslab classifiers name their parts stem. / stages.; torchvision's conv1., layer1., features. ...
        kind = "reslab" if any(k.startswith(("stem.", "stages.")) for k in tensors) else "torchvision"
        try:
            report = load_encoder(tensors, source=kind, **({"label": label} if task == "detect" else {}))
        except ReslabError as e:
            raise ReslabError(f"--init-from {label}: {e}") from None
        if task == "detect":
            return report.summary
    else:
        _classifier_from(model, tensors, label)
    return label
