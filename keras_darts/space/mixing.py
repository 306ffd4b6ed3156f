"""Mixing rules: how an edge's architecture weights alpha [..., ops] become the
coefficients of its candidate ops' outputs, registered by name.

A rule is `rule(alpha, temperature=None) -> coefficients` (same shape, along
the last axis); `temperature`, if given, divides alpha first.  The DARTS
relaxation is "softmax".  New rules (sharpDARTS's Max-W) register with
`@register(name)`; the search steps look them up with `get`.
"""

import tensorflow as tf

from keras_darts.registry import Registry

_RULES = Registry("mixing rule")
register, get, names = _RULES.register, _RULES.get, _RULES.names


@register("softmax")
def softmax(alpha, temperature=None):
    """softmax(alpha / temperature) over the ops (docs/spaces/darts.md#mixing-formula)."""
    return tf.nn.softmax(alpha if temperature is None else alpha / temperature, axis=-1)
