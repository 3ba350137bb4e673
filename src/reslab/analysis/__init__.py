"""Tools that explain why residual networks train: layer responses (He et al. 2015, Fig. 7)."""

from .responses import layer_responses

__all__ = ["layer_responses"]
