"""NAO-V2's architecture pool (docs/methods/nao_v2.md#the-pool): every
architecture the search has seen, with the round it entered, its stand-alone
parameter count at the search size, its latest supernet score, the
controller's prediction for it and, after the final re-rank, its stand-alone
accuracy.

The pool is the search's state between rounds: it is written to
`arch_pool.json` after every phase, and its JSON also rides in every
checkpoint (a string variable), so a resumed run continues from exactly the
pool it stopped with.  Floats survive JSON bit-exactly (Python writes the
shortest repr that reads back to the same double).
"""

import dataclasses
import json

import numpy as np

from keras_darts.errors import ConfigError
from keras_darts.infra.fileio import json_text
from keras_darts.space import nao_arch


@dataclasses.dataclass
class Entry:
    """One architecture of the pool."""

    arch: tuple                      # 40 integers (keras_darts/space/nao_arch.py)
    round: int                       # The round it was added in (0: the random seed pool).
    params: int                      # Stand-alone parameters at the search size.
    score: float = None              # Supernet accuracy on its scoring batch (latest round).
    predicted: float = None          # Controller's predicted score (normalised scale).
    eta: float = None                # Step size of the gradient ascent that made it.
    standalone_accuracy: float = None  # After the final re-rank (top k only).

    @property
    def genotype(self):
        return nao_arch.to_genotype(self.arch)

    def to_json_dict(self):
        data = dataclasses.asdict(self)
        data["arch"] = [int(v) for v in self.arch]
        data["text"] = nao_arch.to_text(self.arch)
        data["genotype"] = self.genotype.to_text()
        return data


class ArchPool:
    """The pool, in the order architectures were added."""

    def __init__(self, entries=()):
        self.replace(entries)

    def replace(self, entries):
        """Holds `entries` instead (a restored pool, kept in the same object)."""
        self.entries = list(entries)
        self._keys = {nao_arch.key(e.arch) for e in self.entries}

    def __len__(self):
        return len(self.entries)

    def __contains__(self, arch):
        return nao_arch.key(arch) in self._keys

    def keys(self):
        return set(self._keys)

    def add(self, archs, round_number, params, etas=None):
        """Appends new architectures (refuses duplicates: pools are sets)."""
        for i, arch in enumerate(archs):
            k = nao_arch.key(arch)
            if k in self._keys:
                raise ValueError(f"architecture already in the pool: {nao_arch.to_text(arch)}")
            self._keys.add(k)
            self.entries.append(Entry(arch=k, round=int(round_number), params=int(params[i]),
                                      eta=None if etas is None else float(etas[i])))

    def of_round(self, round_number):
        """Indices of the architectures added in `round_number`."""
        return [i for i, e in enumerate(self.entries) if e.round == round_number]

    def archs(self, indices=None):
        """[n, 40] int32 of the given entries (default: all)."""
        indices = range(len(self.entries)) if indices is None else indices
        rows = [self.entries[i].arch for i in indices]
        return np.asarray(rows, np.int32).reshape(-1, nao_arch.ARCH_LENGTH)

    def set_scores(self, scores):
        for entry, score in zip(self.entries, scores, strict=True):
            entry.score = float(score)

    def set_predictions(self, predictions, indices=None):
        indices = range(len(self.entries)) if indices is None else indices
        for i, p in zip(indices, predictions, strict=True):
            self.entries[i].predicted = float(p)

    def ranked(self):
        """Indices by supernet score, best first (ties: the earlier entry first);
        unscored entries last."""
        def sort_key(i):
            score = self.entries[i].score
            return (score is None, -(score if score is not None else 0.0), i)
        return sorted(range(len(self.entries)), key=sort_key)

    def best(self):
        """The entry the search answers with: the best stand-alone accuracy once
        the re-rank has run, before that the best supernet score."""
        reranked = [i for i, e in enumerate(self.entries) if e.standalone_accuracy is not None]
        if reranked:
            return self.entries[max(reranked, key=lambda i: (
                self.entries[i].standalone_accuracy, -i))]
        ranked = self.ranked()
        if not ranked or self.entries[ranked[0]].score is None:
            return None
        return self.entries[ranked[0]]

    # -- JSON ---------------------------------------------------------------------
    def to_json_dict(self):
        return {"size": len(self.entries), "entries": [e.to_json_dict() for e in self.entries]}

    def to_json(self):
        """Valid JSON: an unknown value (eta of a random stand-in: NaN) is null."""
        return json_text(self.to_json_dict(), "arch pool")

    @classmethod
    def from_json_dict(cls, data, where="arch pool"):
        try:
            entries = []
            for item in data["entries"]:
                fields = {f.name: item.get(f.name) for f in dataclasses.fields(Entry)}
                fields["arch"] = nao_arch.key(nao_arch.validate(np.asarray(fields["arch"]),
                                                                where))
                entries.append(Entry(**fields))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: not a NAO-V2 architecture pool ({e})") from None
        return cls(entries)

    @classmethod
    def from_json(cls, text, where="arch pool"):
        if not text:
            return cls()
        try:
            return cls.from_json_dict(json.loads(text), where)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not valid JSON ({e})") from None
