"""Candidate ops and the layers they are built from (docs/spaces/darts.md#candidate-operations).

| module | what |
|---|---|
| `registry.py` | op families, ops and op sets by name (`register_family`, `make_op`, ...) |
| `layers.py` | BatchNorm, Conv, Linear, initialisers, `BuiltLayer`, `CandidateOp` |
| `darts_ops.py` | the DARTS op family and the op sets `darts`, `darts_pt`, `msr` |
| `sharp_ops.py` | sharpDARTS's op family `sharp` and its op sets |
| `nao_ops.py` | NAO's op family `nao` and its op set `nao` |
| `spectral_norm.py` | MSR-DARTS's spectral normalisation of a conv kernel |

A new op family is a new module here that registers its ops and op sets on
import; add its import at the bottom of this file.
"""

from keras_darts.ops.layers import (BN_EPSILON, BN_MOMENTUM, BatchNorm, BuiltLayer,  # noqa: F401
                                    CandidateOp, Conv, Linear, NumpyNormal, ReLU, Sequential,
                                    TorchUniform, self_contained_gradients)
from keras_darts.ops.registry import (DEFAULT_FAMILY, family, make_op,  # noqa: F401
                                      op_families, op_set, op_set_family, op_sets,
                                      register_family, register_op, register_op_set,
                                      registered_ops)

# Op families register their ops and op sets on import (new families: below).
from keras_darts.ops.darts_ops import (DARTS_PRIMITIVES, Conv7x1_1x7, DilConv,  # noqa: F401,I001
                                       FactorizedReduce, Identity, Pool, ReLUConvBN, SepConv, Zero)
from keras_darts.ops.sharp_ops import SharpSepConv  # noqa: F401,E402,I001
from keras_darts.ops.nao_ops import NaoFactorizedReduce  # noqa: F401,E402,I001
