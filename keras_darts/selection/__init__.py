"""Architecture selection criteria: turn a searched supernet into a genotype.

A criterion is a callable `criterion(model, context) -> SelectionResult`,
registered by name; `--selection=NAME` picks it.  `context` carries what a
criterion may need besides the model (e.g. validation data for
perturbation-based selection); magnitude needs nothing.
"""

import dataclasses

_CRITERIA = {}


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The genotype and the per-edge numbers the criterion decided on."""

    genotype: object
    scores: dict  # JSON-serialisable: {"normal": [[...per op...] per edge], "reduce": ...}


def register(name):
    def decorate(criterion):
        if name in _CRITERIA:
            raise ValueError(f"selection criterion '{name}' is already registered")
        _CRITERIA[name] = criterion
        return criterion
    return decorate


def names():
    return tuple(sorted(_CRITERIA))


def get(name):
    if name not in _CRITERIA:
        raise KeyError(f"unknown selection criterion '{name}'; available: {list(names())}")
    return _CRITERIA[name]


def select(name, model, context=None):
    return get(name)(model, context or {})


# Built-in criteria register themselves on import.
from keras_darts.selection import magnitude  # noqa: E402,F401
