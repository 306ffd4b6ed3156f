"""Read-out of a supernet that keeps a scored pool of architectures
(docs/selection/pool.md): the pool's best architecture.

A one-shot method that samples discrete architectures (NAO-V2) has no
architecture weights to read; it attaches its pool to the supernet as
`model.scored_pool`, an object whose `best()` returns the entry the search
answers with (`.genotype`, `.arch`, `.score`, `.standalone_accuracy`, `.params`) or None
while nothing is scored, and whose `entries` are the candidates in the order
they were added.
"""

from keras_darts.errors import ConfigError
from keras_darts.selection import SelectionResult, register


@register("pool")
def pool(model, settings):
    scored_pool = getattr(model, "scored_pool", None)
    if scored_pool is None:
        raise ConfigError("--selection=pool reads the scored pool of a sampling method's "
                          "supernet (e.g. --method=nao_v2); this supernet keeps none")
    best = scored_pool.best()
    if best is None:  # Before the first scoring: the first candidate stands in.
        if not scored_pool.entries:
            raise ConfigError("--selection=pool: the pool is empty")
        best = scored_pool.entries[0]
    scores = {"score": best.score, "standalone_accuracy": best.standalone_accuracy,
              "params": best.params, "arch": [int(v) for v in best.arch],
              "pool_size": len(scored_pool.entries)}
    return SelectionResult(genotype=best.genotype, scores=scores)
