"""The op registry: candidate ops by name, and op sets (ordered lists of op names
= the alpha columns of a supernet).

An op family (e.g. `keras_darts/ops/darts_ops.py`) registers each op with
`@register_op(name)` as `factory(channels, stride, affine) -> layer` and its
lists with `register_op_set(name, names)`; `--primitives=NAME` picks an op set.
"""

from keras_darts.registry import Registry

_OPS = Registry("op", KeyError)
_OP_SETS = Registry("op set", KeyError)


def register_op(name):
    """Class/function decorator: `factory(channels, stride, affine) -> Layer` under `name`."""
    return _OPS.register(name)


def register_op_set(name, op_names):
    """Registers an ordered list of candidate ops (= alpha column order)."""
    unknown = [op for op in op_names if op not in _OPS]
    if unknown:
        raise ValueError(f"op set '{name}' uses unregistered ops {unknown}")
    _OP_SETS.add(name, tuple(op_names))


def registered_ops():
    return _OPS.names()


def op_set(name):
    """Returns the op names of a registered op set, in alpha column order."""
    return _OP_SETS.get(name)


def op_sets():
    return _OP_SETS.names()


def make_op(name, channels, stride, affine):
    return _OPS.get(name)(channels, stride, affine)
