"""Classic DARTS read-out by alpha magnitude (docs/selection/magnitude.md): the
space's derivation rule applied to softmax(alpha) of every cell type."""

import dataclasses

from keras_darts.selection import SelectionResult, register
from keras_darts.settings import setting


@dataclasses.dataclass(frozen=True)
class MagnitudeSettings:
    exclude_none: bool = setting(
        True, "magnitude_exclude_none", "Rank a node's edges and choose each edge's op "
        "ignoring 'none' (DARTS's rule); false: with 'none' (sharpDARTS's 'no hack' option, "
        "docs/selection/magnitude.md#none-exclusion).")


@register("magnitude", settings=MagnitudeSettings)
def magnitude(model, settings):
    probs = model.arch_probabilities()
    space = model.space
    candidates = None if settings.exclude_none else space.candidate_ops(exclude=())
    genotype = space.derive_genotype(probs, candidates)
    return SelectionResult(genotype=genotype,
                           scores={cell: p.tolist() for cell, p in probs.items()})
