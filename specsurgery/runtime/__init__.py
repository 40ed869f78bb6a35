"""The numpy reference runtime: run Core ML models offline.

``predict`` runs neuralNetwork / classifier / regressor specs, pipelines
(nested too), linkedModel stubs (resolved through their search path) and, via
``specsurgery.runtime.mil``, ML Programs; ``specsurgery.runtime.classic`` runs
the classic types (GLM, tree ensembles, SVM, feature-engineering transforms).
``infer_shapes`` gives every blob's shape without running the heavy layers;
``verify`` compares two models on seeded random inputs.
"""

from .engine import clear_cache, predict
from .nn import LayerError, supported_kinds
from .shapes import infer_shapes
from .verify import OutputReport, VerifyReport, random_inputs, verify

__all__ = ["predict", "infer_shapes", "random_inputs", "verify", "VerifyReport", "OutputReport",
           "clear_cache", "supported_kinds", "LayerError"]
