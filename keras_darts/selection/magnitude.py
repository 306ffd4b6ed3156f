"""Classic DARTS read-out by alpha magnitude (docs/selection/magnitude.md): the
space's derivation rule applied to softmax(alpha) of every cell type."""

from keras_darts.selection import SelectionResult, register


@register("magnitude")
def magnitude(model, settings):
    del settings  # No settings.
    probs = model.arch_probabilities()
    genotype = model.space.derive_genotype(probs)
    return SelectionResult(genotype=genotype,
                           scores={cell: p.tolist() for cell, p in probs.items()})
