"""Entropic optimal transport, batched, in the log domain (CPU and GPU, any float dtype).

* :func:`convolutional_barycenter`: entropic Wasserstein barycenters of images on a grid (Solomon et al. 2015),
  the solver behind OptTransMix. ``reg`` means what it means in POT's ``ot.bregman.convolutional_barycenter2d``.
  On a CPU its float32 iterations run in a kernel compiled on first use (:mod:`mixlab.ot.native`) when they can.
* :func:`sinkhorn`: entropic transport plans between point clouds (Cuturi 2013), the aligner of AlignMixup.

:mod:`mixlab.ot.graphcut` (imported on use) holds the discrete solvers of PuzzleMix's and Co-Mixup's masks: minimum-
energy labellings of grids by graph cuts, in a compiled kernel with scipy's maximum flow as the fallback.
"""
from .barycenter import blur, convolutional_barycenter
from .sinkhorn import sinkhorn, squared_distances

__all__ = ["convolutional_barycenter", "sinkhorn", "squared_distances", "blur"]
