"""Mixing rules: how an edge's architecture weights alpha [..., ops] become the
coefficients of its candidate ops' outputs, registered by name.

A rule is `rule(alpha, temperature=None) -> coefficients` (same shape, along
the last axis); `temperature`, if given, divides alpha first.  The DARTS
relaxation is "softmax"; sharpDARTS's is "max_w".  The supernet holds its
rule (`SearchNetwork(mixing=...)`, `--weighting`), and every step that mixes
ops reads it there.  New rules register with `@register(name)`.
"""

import tensorflow as tf

from keras_darts.registry import Registry

_RULES = Registry("mixing rule")
register, get, names = _RULES.register, _RULES.get, _RULES.names


@register("softmax")
def softmax(alpha, temperature=None):
    """softmax(alpha / temperature) over the ops (docs/spaces/darts.md#mixing-formula)."""
    return tf.nn.softmax(alpha if temperature is None else alpha / temperature, axis=-1)


@register("max_w")
def max_w(alpha, temperature=None):
    """sharpDARTS's Max-W: 1 - max_j w_j + w_k with w = softmax(alpha / temperature)
    (docs/methods/sharpdarts.md#max-w-weighting).  The strongest op gets exactly
    1, every other op 1 - (w_max - w_k); the max is not detached, so the
    gradient flows through it too."""
    w = softmax(alpha, temperature)
    return 1.0 - tf.reduce_max(w, axis=-1, keepdims=True) + w
