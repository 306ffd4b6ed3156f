"""Architecture selection criteria: turn a searched supernet into a genotype.

A criterion is registered by name (`--selection=NAME`), with the dataclass of
its settings (keras_darts/settings.py) and one of two kinds:

* a read-out, `criterion(model, settings) -> SelectionResult`, that needs
  nothing but the trained supernet (magnitude, stable_rank); the search also
  runs it after every epoch for the per-epoch genotypes;
* a phase (`tunes_supernet=True`), `criterion(run, settings, writer) ->
  SelectionResult`, that trains the supernet further after the search through
  the harness's phase API (keras_darts/runs/search_run.py, "what a selection
  phase may use"); DARTS-PT's perturbation selection is one.  Its per-epoch
  genotypes are previews by the read-out it names (`preview`).

| criterion | module | kind |
|---|---|---|
| `magnitude` | `magnitude.py` | read-out (DARTS) |
| `stable_rank` | `stable_rank.py` | read-out (MSR-DARTS's minimum stable rank) |
| `perturbation` | `perturbation.py` | phase (DARTS-PT) |
| `pool` | `pool.py` | read-out (the best of a sampling method's scored pool: NAO-V2) |
"""

import dataclasses

from keras_darts import settings as settings_lib
from keras_darts.errors import ConfigError
from keras_darts.registry import Registry

_CRITERIA = Registry("selection criterion", KeyError)


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """The genotype and the per-edge numbers the criterion decided on."""

    genotype: object
    scores: dict  # JSON-serialisable: {"normal": [[...per op...] per edge], "reduce": ...}


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A registered criterion (see the module docstring)."""

    name: str
    function: object
    Settings: type = settings_lib.NoSettings
    tunes_supernet: bool = False
    preview: str = None  # A phase's per-epoch read-out; None: itself.

    def __call__(self, *args):
        return self.function(*args)

    @property
    def preview_name(self):
        return self.preview or self.name


def register(name, settings=settings_lib.NoSettings, tunes_supernet=False, preview=None):
    """Registers a criterion under `name` (see the module docstring for the two
    signatures).  `settings`: the dataclass of its settings."""
    def decorate(function):
        if tunes_supernet and not preview:
            raise ValueError(f"phase '{name}' must name the read-out of its previews")
        _CRITERIA.add(name, Criterion(name, function, settings, tunes_supernet, preview))
        return function
    return decorate


def names():
    return tuple(sorted(_CRITERIA.names()))


get = _CRITERIA.get


def make_settings(name, values=None):
    """Criterion `name`'s settings from a settings object, a dict or None (defaults)."""
    criterion = get(name)
    return settings_lib.from_dict(criterion.Settings, values or {},
                                  f"settings of --selection={name}")


def select(name, model, settings=None):
    """Runs the read-out `name` on `model` (settings: its Settings, a dict of
    them, or None for the defaults)."""
    criterion = get(name)
    if criterion.tunes_supernet:
        raise ConfigError(f"--selection={name} tunes the supernet after the search: run it "
                          "through python -m keras_darts.search or keras_darts.select")
    return criterion(model, make_settings(name, settings))


# Built-in criteria register themselves on import.
from keras_darts.selection import magnitude, perturbation, pool, stable_rank  # noqa: E402

BUILT_IN = (magnitude, perturbation, pool, stable_rank)
