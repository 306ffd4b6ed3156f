"""DARTS: the bilevel search of alphas and weights (docs/methods/darts.md).

Every step updates the alphas on a search-val batch (first order: the plain
gradient; second order: the unrolled one) and then the weights on a
search-train batch, every edge mixed by softmax(alpha).
"""

import dataclasses

from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod
from keras_darts.methods.bilevel import ORDERS, BilevelSearch
from keras_darts.settings import setting


@dataclasses.dataclass(frozen=True)
class DartsSettings:
    order: str = setting(
        "first", "order", "Architecture gradient: 'first' = first-order DARTS (DARTS_V1); "
        "'second' = the unrolled gradient with a finite-difference Hessian-vector product "
        "(DARTS_V2, ~2.7x the step cost).", choices=ORDERS)


@register
class Darts(SearchMethod):
    name = "darts"
    description = "bilevel search of alphas and weights (DARTS), first or second --order"
    Settings = DartsSettings

    def build_step(self, model, strategy):
        self.step = BilevelSearch(model, strategy, self.config.batch_size,
                                  self.config.hparams(), order=self.settings.order)
        return self.step
