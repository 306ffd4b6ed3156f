"""NAO's evaluation networks (docs/evaluation.md#nao-networks) and the analytic
parameter count of an architecture's stand-alone CIFAR network.

`NaoNetworkCIFAR` / `NaoNetworkImageNet` are the DARTS networks (stems,
auxiliary head, drop path, classifier, export) around `NaoCell`s, registered
as the networks of op family "nao", so `networks.build_network` builds every
NAO genotype with them.  A NAO cell differs from DARTS's `EvalCell` in three
ways: a cell input is calibrated only when it needs it (ReLU + FactorizedReduce
when it is twice the other input's size, else a 1x1 ReLUConvBN when its
channels are not C), two inputs per node may be the same state, and the
output concatenates the loose ends, including loose cell inputs, which a
reduction cell first halves with a FactorizedReduce (no ReLU).  NAO's layout
of N cells per stage is 3N + 2 cells, reductions at N and 2N + 1: the DARTS
networks' num_layers // 3 and 2 num_layers // 3 for num_layers = 3N + 2.
"""

import keras
import tensorflow as tf

from keras_darts import ops
from keras_darts.evaluation import networks
from keras_darts.ops.nao_ops import NaoFactorizedReduce
from keras_darts.space import nao_arch
from keras_darts.space.supernet import reduction_layers

# How a cell input is brought to C channels at the cell's input size.
FACTORIZED_REDUCE = "factorized_reduce"  # ReLU + FactorizedReduce: the input is twice as big.
RELU_CONV_BN = "relu_conv_bn"            # ReLU + 1x1 conv + BN: other channels, same size.


def num_layers(cells_per_stage):
    """Cells of a NAO network with N = `cells_per_stage` (3N + 2)."""
    return 3 * cells_per_stage + 2


def input_calibration(prev_prev_channels, prev_channels, channels, reduction_prev):
    """(input 0's, input 1's) calibration: FACTORIZED_REDUCE, RELU_CONV_BN or None.

    `reduction_prev`: the previous cell (or ImageNet's stem1) halved the size,
    i.e. input 0 is twice the size of input 1."""
    if reduction_prev:
        first = FACTORIZED_REDUCE
    else:
        first = RELU_CONV_BN if prev_prev_channels != channels else None
    return first, RELU_CONV_BN if prev_channels != channels else None


class NaoCell(networks.EvalCell):
    """One NAO cell: node i = op_x(state x) + op_y(state y); output = channel concat
    of the loose ends (`concat`).  Same arguments as `EvalCell`."""

    def __init__(self, pairs, concat, prev_prev_channels, prev_channels, channels, reduction,
                 reduction_prev, op_family=nao_arch.OP_FAMILY, op_options=None, **kwargs):
        super().__init__(pairs, concat, prev_prev_channels, prev_channels, channels, reduction,
                         reduction_prev, op_family=op_family, op_options=op_options, **kwargs)
        # The nodes of a reduction cell are half its inputs' size: loose inputs are halved.
        self.reduced_inputs = tuple(i for i in self.concat if reduction and i < 2)
        self.input_reducers = [NaoFactorizedReduce(channels, affine=True)
                               for _ in self.reduced_inputs]

    def _check_concat(self):
        """Any state may be a loose end (reduced inputs are halved in `_output`)."""

    def _make_preprocessing(self, prev_prev_channels, prev_channels, reduction_prev):
        c = self.channels
        layers = []
        for kind, c_in in zip(input_calibration(prev_prev_channels, prev_channels, c,
                                                reduction_prev),
                              (prev_prev_channels, prev_channels)):
            if kind == FACTORIZED_REDUCE:  # DARTS's: the cell applies its ReLU.
                layers.append(ops.FactorizedReduce(c, affine=True, in_channels=c_in))
            elif kind == RELU_CONV_BN:
                layers.append(ops.ReLUConvBN(c, affine=True, in_channels=c_in))
            else:
                layers.append(None)
        return tuple(layers)

    def _output(self, states, training):
        states = list(states)
        for i, reducer in zip(self.reduced_inputs, self.input_reducers):
            states[i] = reducer(states[i], training=training)
        return tf.concat([states[i] for i in self.concat], axis=-1)


class _NaoCells:
    """Mixin of the NAO networks: NAO cells, genotypes of NAO's space only."""

    CELL = NaoCell

    @classmethod
    def check_genotype(cls, genotype):
        nao_arch.from_genotype(genotype, where="genotype")


@keras.saving.register_keras_serializable(package="keras_darts")
class NaoNetworkCIFAR(_NaoCells, networks.NetworkCIFAR):
    """NAO's CIFAR network: stem 3x3 conv to 3C + BN, 3N + 2 NAO cells, auxiliary
    head after the second reduction, global pool, dropout (`dropout_rate`: 0.4 in
    NAO's recipe, 0 by default), linear classifier.

    Arguments as `NetworkCIFAR`; NAONet-V2's paper size is C=36, N=6 (20 cells):
    4,387,654 weights without the auxiliary head.

    Example:
      net = networks.build_network("NAONet_V2")   # the registered NAO network
      logits, aux_logits = net(images, training=True)
    """


@keras.saving.register_keras_serializable(package="keras_darts")
class NaoNetworkImageNet(_NaoCells, networks.NetworkImageNet):
    """NAO's ImageNet mobile network: DARTS's two stride-2 stems, 3N + 2 NAO cells
    (C=52, N=4: 14 cells, 7,026,850 weights for NAONet-V2 without the auxiliary head)."""

    def __init__(self, genotype, num_classes=1000, channels=52, num_layers=14, auxiliary=True,
                 input_shape=None, **kwargs):
        super().__init__(genotype, num_classes, channels, num_layers, auxiliary, input_shape,
                         **kwargs)


networks.register_networks(nao_arch.OP_FAMILY,
                           {"cifar": NaoNetworkCIFAR, "imagenet": NaoNetworkImageNet})


# ---------------------------------------------------------------------------
# Analytic parameter count (NAO-V2's size-balanced sampling calls it per arch)
# ---------------------------------------------------------------------------

def _sep_conv_params(kernel_size, c):
    return 2 * (kernel_size * kernel_size * c + c * c + 2 * c)  # [dw kxk, pw 1x1, BN] x 2


def _conv_bn_params(c_in, c):
    """A 1x1 ReLUConvBN or a FactorizedReduce (two 1x1 convs to c/2) c_in -> c, with BN."""
    return c_in * c + 2 * c


_OP_PARAMS = {  # (channels, stride) -> weights of the op.
    "sep_conv_3x3": lambda c, stride: _sep_conv_params(3, c),
    "sep_conv_5x5": lambda c, stride: _sep_conv_params(5, c),
    "avg_pool_3x3": lambda c, stride: 0,
    "max_pool_3x3": lambda c, stride: 0,
    "identity": lambda c, stride: _conv_bn_params(c, c) if stride > 1 else 0,
}


def standalone_param_count(arch, channels=20, cells_per_stage=3, num_classes=10,
                           stem_multiplier=3, image_channels=3):
    """Trainable weights (auxiliary head excluded) of `NaoNetworkCIFAR` for the
    40-integer `arch` with C=`channels` and N=`cells_per_stage`, computed from the
    layer shapes without building anything (NAO-V2's size-balanced sampling:
    docs/evaluation.md#nao-networks).  Defaults: NAO-V2's search size."""
    arch = nao_arch.validate(arch)
    layers = num_layers(cells_per_stage)
    reductions = reduction_layers(layers)
    stem = stem_multiplier * channels
    total = 3 * 3 * image_channels * stem + 2 * stem
    prev_prev = prev = stem
    reduction_prev = False
    c = channels
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            c *= 2
        cell = nao_arch.cell_of(arch, "reduce" if reduction else "normal")
        for kind, c_in in zip(input_calibration(prev_prev, prev, c, reduction_prev),
                              (prev_prev, prev)):
            total += _conv_bn_params(c_in, c) if kind else 0
        for k in range(0, nao_arch.CELL_LENGTH, 2):
            state, op = int(cell[k]), nao_arch.OPS[cell[k + 1]]
            total += _OP_PARAMS[op](c, 2 if reduction and state < 2 else 1)
        loose = nao_arch.loose_ends(cell)
        if reduction:
            total += sum(_conv_bn_params(c, c) for state in loose if state < 2)
        prev_prev, prev = prev, len(loose) * c
        reduction_prev = reduction
    return total + prev * num_classes + num_classes
