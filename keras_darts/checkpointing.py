"""What a checkpoint holds of a Keras 3 model.

`tf.train.Checkpoint(model=keras_model)` follows only the attributes TF's
tracking sees.  Keras 3 keeps sublayers stored in Python lists (the supernet's
cells, a cell's edges, an edge's candidate ops) out of that graph: such a
checkpoint silently held the stem, the classifier and the alphas, and none of
the cells' weights or BatchNorm statistics.  Checkpoints therefore list the
model's variables explicitly, by position in `model.weights` (an order fixed by
the code that builds the model; restoring into a model of another shape fails).
"""


def model_variables(model):
    """Every variable of `model` (weights, alphas, BN statistics, buffers), as
    the tf.Variables behind the Keras variables, in `model.weights` order."""
    return [getattr(v, "value", v) for v in model.weights]
