"""Training: RunConfig and recipes, the fit() loop, checkpoints, metrics."""

from .config import RunConfig, list_recipes, load_recipe, make_config

__all__ = ["RunConfig", "list_recipes", "load_recipe", "make_config", "fit"]


def __getattr__(name: str):
    if name == "fit":
        from .loop import fit

        return fit
    raise AttributeError(name)
