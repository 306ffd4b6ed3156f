"""The op registry: op families, their candidate ops by name, and op sets
(ordered lists of op names = the alpha columns of a supernet).

An *op family* is a set of op definitions that share names across papers:
sharpDARTS's `sep_conv_3x3` is a different layer from DARTS's, so ops are
registered per family (docs/extending.md#an-op-family).  A family may declare
options with defaults (sharpDARTS: the middle width of its choke ops), which
`make_op` passes to every factory of that family.

    register_family("darts")
    @register_op("sep_conv_3x3", family="darts")   # factory(channels, stride, affine, **options)
    register_op_set("darts", names, family="darts")
    make_op("sep_conv_3x3", 16, 1, affine=False, family="darts")

`--primitives=NAME` picks an op set, and with it its family.
"""

import dataclasses

from keras_darts.registry import Registry

DEFAULT_FAMILY = "darts"


@dataclasses.dataclass
class OpFamily:
    """The ops of one family and the options (name -> default) its factories take."""

    name: str
    options: dict
    ops: Registry = None

    def __post_init__(self):
        self.ops = Registry(f"op of family '{self.name}'", KeyError)

    def resolve_options(self, given):
        """The family's options with `given` ones replacing their defaults;
        an option the family does not take is an error (it would be ignored)."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            taken = sorted(self.options) or "none"
            raise ValueError(f"op family '{self.name}' takes no option(s) {unknown} "
                             f"(its options: {taken})")
        return {**self.options, **given}

    def make(self, name, channels, stride, affine, **options):
        return self.ops.get(name)(channels, stride, affine, **self.resolve_options(options))


_FAMILIES = Registry("op family", KeyError)
_OP_SETS = Registry("op set", KeyError)
_OP_SET_FAMILY = {}


def register_family(name, **options):
    """Registers an op family whose factories take `options` (with these defaults)."""
    _FAMILIES.add(name, OpFamily(name, dict(options)))


def family(name=DEFAULT_FAMILY):
    return _FAMILIES.get(name)


def op_families():
    return _FAMILIES.names()


def register_op(name, family=DEFAULT_FAMILY):
    """Class/function decorator: `factory(channels, stride, affine, **options) ->
    Layer` under `name` in op family `family`."""
    return _FAMILIES.get(family).ops.register(name)


def register_op_set(name, op_names, family=DEFAULT_FAMILY):
    """Registers an ordered list of candidate ops of `family` (= alpha column order)."""
    known = _FAMILIES.get(family).ops
    unknown = [op for op in op_names if op not in known]
    if unknown:
        raise ValueError(f"op set '{name}' uses ops {unknown} not registered in op family "
                         f"'{family}'")
    _OP_SETS.add(name, tuple(op_names))
    _OP_SET_FAMILY[name] = family


def registered_ops(family=DEFAULT_FAMILY):
    """The op names of `family`."""
    return _FAMILIES.get(family).ops.names()


def op_set(name):
    """Returns the op names of a registered op set, in alpha column order."""
    return _OP_SETS.get(name)


def op_set_family(name):
    """The op family whose ops the op set `name` lists."""
    _OP_SETS.get(name)  # A clear error for an unknown set.
    return _OP_SET_FAMILY[name]


def op_sets():
    return _OP_SETS.names()


def make_op(name, channels, stride, affine, family=DEFAULT_FAMILY, **options):
    """The op `name` of `family` for `channels` channels and `stride`
    (`affine`: BatchNorm with scale and offset, i.e. outside the supernet)."""
    return _FAMILIES.get(family).make(name, channels, stride, affine, **options)
