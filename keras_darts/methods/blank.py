"""DARTS-PT's fix-alpha baseline, "blank" (docs/methods/blank.md): the DARTS
supernet trained with its alphas never updated (uniform mixing), in the search
and in a perturbation selection's tuning alike."""

from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod


@register
class Blank(SearchMethod):
    name = "blank"
    description = ("DARTS-PT's fix-alpha baseline: the DARTS supernet with alphas never "
                   "updated, in the search and in perturbation tuning")
    trains_alphas = False
