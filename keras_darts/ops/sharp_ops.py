"""sharpDARTS's op family `sharp` and its op sets (docs/methods/sharpdarts.md#ops).

Every convolution op is a `SharpSepConv`: two depthwise-separable stages
whose middle width is free (`mid_channels`), and whose dilated variants are
two-stage too, so all conv ops have the same depth.  What differs from the
DARTS family besides: the average pool counts its zero padding, and
`conv_7x1_1x7`'s BatchNorm uses eps 1e-3.  The family's option
`mid_channels` is the fixed middle width of the choke ops (32 in the search;
`keras_darts.train --mid_channels`).  `dil_flood_conv_5x5` is left out: the
reference pads it wrongly (docs/methods/sharpdarts.md#deviations).
"""

from keras_darts.ops.darts_ops import Conv7x1_1x7, Pool, Zero, skip_op
from keras_darts.ops.layers import BatchNorm, CandidateOp, Conv, ReLU, Sequential
from keras_darts.ops.registry import register_family, register_op, register_op_set

FAMILY = "sharp"
CHOKE_MID_CHANNELS = 32  # The reference search's fixed choke width.
register_family(FAMILY, mid_channels=CHOKE_MID_CHANNELS)


class SharpSepConv(CandidateOp):
    """ReLU, dw kxk (stride s, dilation d), pw 1x1 -> c_mid, BN, ReLU, dw kxk
    (stride 1, dilation 1), pw 1x1 -> channels, BN.

    Only the first depthwise conv is strided and dilated.  `mid_channels`
    (c_mid) defaults to channels * mid_multiplier; `in_channels` defaults to
    `channels` (inside a cell every op maps C -> C).
    """

    fuses_weight = True
    starts_with_relu = True

    def __init__(self, channels, stride, affine=False, kernel_size=3, dilation=1,
                 mid_multiplier=1, mid_channels=None, in_channels=None, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        c_in = channels if in_channels is None else in_channels
        c_mid = int(channels * mid_multiplier) if mid_channels is None else mid_channels
        k = kernel_size
        self.kernel_size, self.dilation = k, dilation
        self.in_channels, self.mid_channels = c_in, c_mid
        self.body = Sequential([
            Conv(c_in, c_in, k, stride, dilation * (k - 1) // 2, dilation=dilation,
                 depthwise=True),
            Conv(c_in, c_mid, 1), BatchNorm(c_mid, affine),
            ReLU(),
            Conv(c_mid, c_mid, k, 1, (k - 1) // 2, depthwise=True),
            Conv(c_mid, channels, 1), BatchNorm(channels, affine),
        ])

    def call(self, x, training=False, weight=None):
        return self.body(x, training=training, weight=weight)


class ResizablePool(CandidateOp):
    """3x3 max pool (pad 1, stride s), then, only when the widths differ, a 1x1
    conv in_channels -> channels and a BatchNorm with eps 1e-3: the pool op of
    the HyperCuboid grid (docs/methods/hypercuboid.md#grid)."""

    fuses_weight = True

    def __init__(self, channels, stride, affine=False, in_channels=None, **kwargs):
        super().__init__(channels, stride, affine, **kwargs)
        self.in_channels = channels if in_channels is None else in_channels
        self.pool = Pool(self.in_channels, stride, affine, kind="max")
        self.resize = None
        if self.in_channels != channels:
            self.resize = Sequential([Conv(self.in_channels, channels, 1),
                                      BatchNorm(channels, affine, epsilon=1e-3)])

    def call(self, x, training=False, weight=None):
        if self.resize is None:
            return self.pool(x, training=training, weight=weight)
        return self.resize(self.pool(x, training=training), training=training, weight=weight)


def _sharp_sep(kernel_size, dilation=1, mid_multiplier=1, choke=False):
    """Factory of a SharpSepConv op; a choke op takes the family's fixed middle width."""
    def factory(channels, stride, affine, mid_channels):
        return SharpSepConv(channels, stride, affine, kernel_size=kernel_size, dilation=dilation,
                            mid_multiplier=mid_multiplier,
                            mid_channels=mid_channels if choke else None)
    return factory


def _pool(kind, count_padding=False):
    def factory(channels, stride, affine, mid_channels):
        del mid_channels
        # In the supernet (affine=False) every pool is followed by a non-affine BN.
        return Pool(channels, stride, affine, kind=kind, bn_after=not affine,
                    count_padding=count_padding)
    return factory


_FACTORIES = {
    "none": lambda c, s, a, mid_channels: Zero(c, s, a),
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg", count_padding=True),
    "skip_connect": lambda c, s, a, mid_channels: skip_op(c, s, a),
    "sep_conv_3x3": _sharp_sep(3),
    "sep_conv_5x5": _sharp_sep(5),
    "sep_conv_7x7": _sharp_sep(7),
    "dil_conv_3x3": _sharp_sep(3, dilation=2),
    "dil_conv_5x5": _sharp_sep(5, dilation=2),
    "flood_conv_3x3": _sharp_sep(3, mid_multiplier=4),
    "flood_conv_5x5": _sharp_sep(5, mid_multiplier=4),
    "dil_flood_conv_3x3": _sharp_sep(3, dilation=2, mid_multiplier=4),
    "choke_conv_3x3": _sharp_sep(3, choke=True),
    "dil_choke_conv_3x3": _sharp_sep(3, dilation=2, choke=True),
    "conv_7x1_1x7": lambda c, s, a, mid_channels: Conv7x1_1x7(c, s, a, bn_epsilon=1e-3),
}
for _name, _factory in _FACTORIES.items():
    register_op(_name, family=FAMILY)(_factory)

# The 8 DARTS op names built with SharpSepConv: the space of SharpSepConvDARTS.
register_op_set("sharpsep_darts", ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                   "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                                   "dil_conv_5x5"), family=FAMILY)
# The reference's PRIMITIVES, the "sharpDARTS" space.
register_op_set("sharp", ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
                          "dil_conv_3x3", "flood_conv_3x3", "dil_flood_conv_3x3",
                          "choke_conv_3x3", "dil_choke_conv_3x3"), family=FAMILY)
# The reference's SHARPER_PRIMITIVES.
register_op_set("sharper", ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                            "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3",
                            "dil_conv_5x5", "flood_conv_3x3", "flood_conv_5x5",
                            "dil_flood_conv_3x3"), family=FAMILY)
