"""Parameters, multiply-adds and output shapes, per stage, measured by running the model once.

Multiply-adds come from ``torch.utils.flop_counter`` (which counts 2 FLOPs per multiply-add of
convolutions and matrix products, and nothing for BN, ReLU, pooling or additions): the same
convention as the paper's "FLOPs" in Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .._table import format_table
from ..errors import ReslabError
from .registry import get_model_entry

__all__ = ["LayerInfo", "ModelInfo", "model_info"]


@dataclass(frozen=True)
class LayerInfo:
    """One stem/stage/head row: its output shape, parameters and multiply-adds."""

    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`model_info` measured: totals (for ``input_size``) and the rows."""

    name: str
    params: int
    macs: int
    input_size: tuple[int, ...]
    rows: list[LayerInfo] = field(default_factory=list)

    def table(self) -> str:
        """The per-stage table as aligned text, totals last."""
        body = [[r.name, "x".join(map(str, r.output_shape)), f"{r.params:,}", _human(r.macs)] for r in self.rows]
        body.append(["total", "", f"{self.params:,}", _human(self.macs)])
        title = f"{self.name}  input {'x'.join(map(str, self.input_size))}"
        table = format_table(["layer", "output", "params", "mult-adds"], body, total_row=True)
        return (
            f"{title}\n{table}\n"
            f"params {self.params / 1e6:.2f}M, multiply-adds {self.macs / 1e9:.3f}G"
        )


def _human(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _rows_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """A classifier's stem, stages and head; a dense model's levels (its ``info_rows()``)."""
    info_rows = getattr(model, "info_rows", None)
    if callable(info_rows):
        return list(info_rows())
    rows = []
    for name, child in model.named_children():
        if name == "stages" and isinstance(child, (nn.Sequential, nn.ModuleList)):
            rows += [(f"stages.{i}", stage) for i, stage in enumerate(child)]
        elif not isinstance(child, nn.Identity):
            rows.append((name, child))
    return rows


@torch.no_grad()
def model_info(model: nn.Module, input_size: tuple[int, ...] | None = None) -> ModelInfo:
    """Measure ``model`` on one input of ``input_size`` (C, H, W), in eval mode.

    Args:
        model: any module; reslab classifiers get one row per stem, stage and head, dense models
            one per level (a U-Net's ``down.i`` and ``up.i``, an hourglass's stacks).
        input_size: (C, H, W); defaults to the registry's native size for the model.

    A row whose module the model runs child by child (a Backbone's stem when its map is taken
    before the stem's max-pool) takes its output shape from the last child that ran and its
    multiply-adds from its children.
    """
    name = getattr(model, "model_name", type(model).__name__)
    if input_size is None:
        input_size = get_model_entry(name).input_size if hasattr(model, "model_name") else (3, 224, 224)
    input_size = tuple(int(v) for v in input_size)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ReslabError(f"input size must be C,H,W with positive values, got {input_size}")
    was_training = model.training
    model.eval()
    rows = _rows_of(model)
    shapes: dict[str, tuple[int, ...]] = {}
    child_shapes: dict[str, tuple[int, ...]] = {}  # the last child that ran, for rows not run whole
    hooks = []
    for row_name, module in rows:
        def hook(_m, _inp, out, row_name=row_name, into=shapes):
            first = out[0] if isinstance(out, (list, tuple)) else out
            if isinstance(first, torch.Tensor):
                into[row_name] = tuple(first.shape[1:])
        hooks.append(module.register_forward_hook(hook))
        for child in module.children():
            hooks.append(child.register_forward_hook(lambda m, i, o, row_name=row_name: hook(m, i, o, row_name, child_shapes)))
    try:
        x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
        with FlopCounterMode(display=False) as counter:
            model(x)
    except RuntimeError as e:  # e.g. an input too small for the pooling layers
        raise ReslabError(f"{name} cannot run on input {input_size}: {str(e).splitlines()[0]}") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    out = []
    for row_name, module in rows:
        shape = shapes.get(row_name, child_shapes.get(row_name))
        if shape is None:
            continue
        key = f"{root}.{row_name}"
        if key in counts:
            flops = sum(counts[key].values())
        else:  # run child by child: no scope of its own in the counter
            flops = sum(sum(counts.get(f"{key}.{child}", {}).values()) for child, _ in module.named_children())
        out.append(LayerInfo(row_name, shape, sum(p.numel() for p in module.parameters()), flops // 2))
    return ModelInfo(
        name=name,
        input_size=input_size,
        params=sum(p.numel() for p in model.parameters()),
        macs=counter.get_total_flops() // 2,
        rows=out,
    )
