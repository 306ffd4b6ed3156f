"""Search spaces and the supernet: what a search chooses from and how it is run.

| module | what |
|---|---|
| `search_space.py` | `SearchSpace` (ops, wiring, concat, cell types, derivation), registry |
| `darts_cell.py` | the registered `darts` space: the DARTS cell |
| `cells.py` | `MixedOp` (one supernet edge) and `SearchCell` |
| `plans.py` | the forward contract: how every edge runs in one pass |
| `mixing.py` | mixing rules (alpha -> op coefficients): `softmax` |
| `supernet.py` | `SearchNetwork`, the supernet |
| `genotype.py`, `published.py` | discrete architectures, JSON, published genotypes |

A new space is a module here registering a factory with
`@search_space.register(name)`; add its import below (docs/extending.md).
"""

from keras_darts.space import darts_cell  # noqa: F401  (registers "darts")
