"""keras_darts: differentiable architecture search (DARTS family) in Keras 3 / TF 2."""

__version__ = "0.1.0"
