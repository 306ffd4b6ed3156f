"""Candidate ops and the layers they are built from (docs/spaces/darts.md#candidate-operations).

| module | what |
|---|---|
| `registry.py` | `register_op`, `register_op_set`, `make_op`, `op_set`: ops and op sets by name |
| `layers.py` | BatchNorm, Conv, Linear, initialisers, `BuiltLayer`, `CandidateOp` |
| `darts_ops.py` | the DARTS op family and the op sets `darts`, `darts_pt`, `msr` |
| `spectral_norm.py` | MSR-DARTS's spectral normalisation of a conv kernel |

A new op family is a new module here that registers its ops and op sets on
import; add its import at the bottom of this file.
"""

from keras_darts.ops.layers import (BN_EPSILON, BN_MOMENTUM, BatchNorm, BuiltLayer,  # noqa: F401
                                    CandidateOp, Conv, Linear, NumpyNormal, ReLU, Sequential,
                                    TorchUniform, self_contained_gradients)
from keras_darts.ops.registry import (make_op, op_set, op_sets, register_op,  # noqa: F401
                                      register_op_set, registered_ops)

# Op families register their ops and op sets on import (new families: below).
from keras_darts.ops.darts_ops import (DARTS_PRIMITIVES, Conv7x1_1x7, DilConv,  # noqa: F401,I001
                                       FactorizedReduce, Identity, Pool, ReLUConvBN, SepConv, Zero)
