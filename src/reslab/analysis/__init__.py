"""Why residual networks train, measured: ``reslab analyze KIND TARGETS...``.

Each analysis works on model names (the network at initialisation, seeded) and run directories
(trained weights), and writes an analysis directory (``analysis.json``, PNG figures,
``report.md`` / ``report.html``) that a rerun reuses and resumes:

- ``gradients``: weight-gradient norm of every layer for a batch of real images.
- ``shattering``: gradients along a line of inputs, their autocorrelation (Balduzzi et al. 2017).
- ``paths``: path lengths and the gradient per length (Veit et al. 2016, Fig. 6).
- ``blocks``: ``||F(x)|| / ||x||`` per residual block and image.
- ``lesion``: test error with residual blocks deleted (Veit et al. 2016).
- ``landscape``: loss along filter-normalised random directions, Hessian eigenvalue ratio (Li et al. 2018);
  under torchrun the grid cells are split over the processes.
- ``cam``: Grad-CAM heat maps (Selvaraju et al. 2017); ``reslab predict --cam`` too.
- ``report``: :func:`render_collection`, one report over a folder of analyses.
- layer responses (He et al. 2015, Fig. 7): :func:`layer_responses`, used by ``reslab reproduce responses``.

Python::

    from reslab.analysis import analyze, Options
    analyze("gradients", ["plain56", "resnet56"], options=Options(data="embedded"))

The measurements themselves are functions of a model and tensors (:func:`layer_gradient_norms`,
:func:`line_gradients`, :func:`path_gradients`, :func:`block_ratios`, :func:`lesion_errors`,
:func:`grad_cam`); blocks and layers are found from the modules (:mod:`.structure`), never by name.
"""

from . import kinds as _kinds  # noqa: F401  (registers the analyses)
from .blocks import block_ratios
from .cam import grad_cam, overlay, write_cams
from .core import KINDS, Options, analyze, read_analysis, render_analysis, render_collection
from .gradients import layer_gradient_norms
from .lesion import error_rate, lesion_errors, random_lesion_errors
from .paths import path_gradient_vectors, path_gradients, path_length_distribution
from .responses import layer_responses
from .shattering import autocorrelation, calibrate_bn, line_gradients, neighbour_correlation, white_noise_autocorrelation
from .structure import residual_blocks, weighted_layers

__all__ = ["layer_responses", "analyze", "Options", "KINDS", "read_analysis", "render_analysis", "render_collection",
           "layer_gradient_norms", "line_gradients", "autocorrelation", "neighbour_correlation",
           "white_noise_autocorrelation", "calibrate_bn", "path_length_distribution", "path_gradients",
           "path_gradient_vectors", "block_ratios", "error_rate", "lesion_errors", "random_lesion_errors", "grad_cam",
           "overlay", "write_cams", "residual_blocks", "weighted_layers"]
