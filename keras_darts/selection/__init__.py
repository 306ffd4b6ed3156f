"""Architecture selection criteria: turn a searched supernet into a genotype.

A criterion is a callable `criterion(model, context) -> SelectionResult`,
registered by name; `--selection=NAME` picks it.  `context` carries what a
criterion may need besides the model (e.g. validation data for
perturbation-based selection); magnitude needs nothing.
"""

import dataclasses

_CRITERIA = {}
_REQUIRES = {}


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The genotype and the per-edge numbers the criterion decided on."""

    genotype: object
    scores: dict  # JSON-serialisable: {"normal": [[...per op...] per edge], "reduce": ...}


def register(name, requires=()):
    """Registers `criterion(model, context)` under `name`.  `requires`: context
    keys it cannot run without (e.g. callbacks that fine-tune the supernet)."""
    def decorate(criterion):
        if name in _CRITERIA:
            raise ValueError(f"selection criterion '{name}' is already registered")
        _CRITERIA[name] = criterion
        _REQUIRES[name] = tuple(requires)
        return criterion
    return decorate


def names():
    return tuple(sorted(_CRITERIA))


def standalone_names():
    """Criteria that need nothing but the trained supernet (what --selection offers)."""
    return tuple(name for name in names() if not _REQUIRES[name])


def get(name):
    if name not in _CRITERIA:
        raise KeyError(f"unknown selection criterion '{name}'; available: {list(names())}")
    return _CRITERIA[name]


def select(name, model, context=None):
    return get(name)(model, context or {})


# Built-in criteria register themselves on import.
from keras_darts.selection import magnitude, perturbation, stable_rank  # noqa: E402

BUILT_IN = (magnitude, perturbation, stable_rank)
