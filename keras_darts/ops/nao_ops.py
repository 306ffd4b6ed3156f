"""NAO's op family `nao` and its op set `nao` ("small" space, docs/evaluation.md#nao-networks).

The five ops are DARTS layers, with two differences from the DARTS family:
pools never carry a BatchNorm (not even in a supernet), and `identity` at
stride 2 is NAO's FactorizedReduce, which has no ReLU in front (DARTS's
`skip_connect` at stride 2 rectifies its input first).  Op ids follow NAO's
order (`keras_darts.space.nao_arch.OPS`).
"""

from keras_darts.ops.darts_ops import FactorizedReduce, Identity, Pool, SepConv
from keras_darts.ops.registry import register_family, register_op, register_op_set
from keras_darts.space import nao_arch

FAMILY = nao_arch.OP_FAMILY
register_family(FAMILY)


class NaoFactorizedReduce(FactorizedReduce):
    """Concat[1x1 s2 conv on x, 1x1 s2 conv on x shifted by one pixel]; BN: DARTS's
    FactorizedReduce without the leading ReLU (the cell passes the state as it is).

    NAO's stride-2 `identity` and the reduction of a reduction cell's loose
    inputs; maps in_channels -> channels (even)."""

    starts_with_relu = False


def identity_op(channels, stride, affine):
    """`identity`: the input itself, or NaoFactorizedReduce at stride 2."""
    if stride == 1:
        return Identity(channels, stride, affine)
    return NaoFactorizedReduce(channels, stride, affine)


_FACTORIES = {
    "sep_conv_3x3": lambda c, s, a: SepConv(c, s, a, kernel_size=3),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, s, a, kernel_size=5),
    # TF pools skip padded pixels: avg_pool_3x3 is count_include_pad=False.
    "avg_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="avg"),
    "max_pool_3x3": lambda c, s, a: Pool(c, s, a, kind="max"),
    "identity": identity_op,
}
for _name in nao_arch.OPS:
    register_op(_name, family=FAMILY)(_FACTORIES[_name])

register_op_set(FAMILY, nao_arch.OPS, family=FAMILY)
