"""Search methods, registered by name: `--method=NAME` picks one.

| method | module | what it trains |
|---|---|---|
| `darts` | `darts.py` | alphas and weights, first or second order (DARTS) |
| `blank` | `blank.py` | weights only, alphas fixed at init (DARTS-PT's baseline) |
| `edas` | `edas.py` | one sampled edge relaxed, the others clamped (EDAS) |
| `msr` | `msr.py` | spectrally normalised weights, softmax(-srank) mixing (MSR-DARTS) |
| `hypercuboid` | `hypercuboid.py` | alphas and weights of a grid of widths (HyperCuboid) |
| `nao_v2` | `nao_v2/` | a one-shot supernet on sampled architectures, NAO controller (NAO-V2) |

A method is a `keras_darts.methods.base.SearchMethod` subclass in its own
module, registered with `@register`; add its import at the bottom of this
file (docs/extending.md).  The harness only ever calls `get(name)(config)`.
"""

from keras_darts.errors import ConfigError
from keras_darts.registry import Registry

_METHODS = Registry("search method")
get, names = _METHODS.get, _METHODS.names


def by_relaxation(value):
    """The method a `--relaxation` value stands for (None: "full", the --method's own)."""
    if value == "full":
        return None
    for name in names():
        if get(name).relaxation == value:
            return name
    raise ConfigError(f"unknown --relaxation '{value}'; known: {list(relaxations())}")


def relaxations():
    return ("full",) + tuple(get(name).relaxation for name in names() if get(name).relaxation)


def register(method_cls):
    """Class decorator: registers a `SearchMethod` subclass under its `name`."""
    if not method_cls.name:
        raise ValueError(f"{method_cls.__name__} has no name")
    return _METHODS.add(method_cls.name, method_cls)


# Built-in methods register themselves on import.
from keras_darts.methods import blank, darts, edas, hypercuboid, msr, nao_v2  # noqa: E402,F401
