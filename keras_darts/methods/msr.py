"""MSR-DARTS's own search (`--method=msr`, docs/methods/msr.md).

No architecture parameters are trained.  The supernet has only the 4
parameterised ops (op set "msr"); every conv inside them is spectrally
normalised in each train-mode forward; each edge mixes its ops by
softmax(-srank), srank = the H*W-scaled stable ranks of the ops' last
pointwise kernels, per cell, recomputed at the start of every epoch and
held constant (no gradient) during it; only the weights are trained (SGD, the
epoch's cosine value at cos(pi * e / epochs)).  The genotype is the
`stable_rank` criterion's: mean over the cells of a type, per node the 2
edges with the smallest min-over-ops srank.

`--msr_shapes` (a setting of the stable_rank criterion, which this method's
read-out is) sets the (H, W) every edge is taken to run at, for the spectral
norm and the stable ranks alike ("code": the reference code's sizes, default).
"""

import os

import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import ConfigError
from keras_darts.infra.fileio import write_json
from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod
from keras_darts.methods.bilevel import BilevelSearch
from keras_darts.ops.spectral_norm import SpectralNorm, conv_output_size
from keras_darts.selection.stable_rank import edge_input_sizes, per_cell_sranks
from keras_darts.space import plans
from keras_darts.space.supernet import SearchNetwork

OP_SET = "msr"
SELECTION = "stable_rank"


def build_supernet(num_classes, msr_shapes="code", **kwargs):
    """The MSR-DARTS supernet: `SearchNetwork` over the op set "msr" with every
    candidate conv spectrally normalised.  kwargs: SearchNetwork's."""
    model = SearchNetwork(num_classes, primitives=OP_SET, **kwargs)
    normalise_candidate_convs(model, msr_shapes)
    return model


def candidate_convs(op):
    """The convs of a candidate op in call order (SepConv/DilConv: their body)."""
    chain = getattr(getattr(op, "body", None), "chain", ())
    convs = [layer for layer in chain if isinstance(layer, ops.Conv)]
    if not convs:
        raise ConfigError(f"MSR-DARTS normalises convolutions, but op {op.name} "
                          f"({type(op).__name__}) has none")
    return convs


def normalise_candidate_convs(model, msr_shapes="code"):
    """Attaches a `SpectralNorm` to every conv of every candidate op; each runs
    its power iteration on the input size the edge gives that conv."""
    for cell, sizes in zip(model.search_cells, edge_input_sizes(model, msr_shapes)):
        for edge, size in zip(cell.edges, sizes):
            for op in edge.candidates:
                conv_size = size
                for conv in candidate_convs(op):
                    if conv.spectral_norm is not None:
                        raise ValueError(f"{conv.name} is already spectrally normalised")
                    conv.spectral_norm = SpectralNorm(conv, conv_size,
                                                      rerandomise=conv.depthwise)
                    conv_size = conv_output_size(conv_size, conv)


def mixing_weights(sranks):
    """softmax(-srank) over the ops of every edge: [..., num_ops] -> float32.

    Computed in float64 from the smallest srank, so large gaps give exact 0/1
    rather than overflow (sranks [4903, 5357, 5679, 4267] -> [0, 0, 0, 1])."""
    sranks = np.asarray(sranks, np.float64)
    scaled = np.exp(-(sranks - sranks.min(axis=-1, keepdims=True)))
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)


def cell_mixing(model, msr_shapes="code"):
    """(per-cell srank matrices [num_cells, E, K], their mixing weights)."""
    sranks = np.stack(per_cell_sranks(model, msr_shapes))
    return sranks, mixing_weights(sranks)


class MsrSearch(BilevelSearch):
    """The search step of MSR-DARTS: weight-only steps (no val batch) in which
    every cell mixes its edges by its own weights, set with `set_cell_weights`."""

    def __init__(self, model, strategy, global_batch_size, hparams):
        super().__init__(model, strategy, global_batch_size, hparams)
        shape = (len(model.search_cells),) + tuple(model.space.alpha_shape)
        with strategy.scope():
            self.cell_weights = tf.Variable(tf.fill(shape, 1.0 / shape[-1]), trainable=False,
                                            name="cell_weights")

    def set_cell_weights(self, weights):
        """Mixing weights [num_cells, num_edges, num_ops] of every later step and
        evaluation."""
        self.cell_weights.assign(tf.convert_to_tensor(weights, tf.float32))

    def plan(self):
        return plans.MixPerCell(self.cell_weights)


@register
class Msr(SearchMethod):
    """MSR-DARTS (see the module docstring)."""

    name = "msr"
    description = ("MSR-DARTS: no alphas; spectrally normalised 4-op supernet mixed by "
                   "softmax(-stable rank) per cell; implies --primitives=msr "
                   "--selection=stable_rank")
    trains_alphas = False
    # Its mixing is softmax(-srank), not a rule of alphas: --weighting would be ignored.
    implied = {"primitives": OP_SET, "selection": SELECTION, "weighting": "softmax"}
    lr_options = {"stepped_before_epoch": False}  # The reference steps after the epoch.

    @property
    def shapes(self):
        return self.config.selection_settings.msr_shapes

    def build_supernet(self, num_classes, image_shape):
        model = super().build_supernet(num_classes, image_shape)
        normalise_candidate_convs(model, self.shapes)
        return model

    def build_step(self, model, strategy):
        self.step = MsrSearch(model, strategy, self.config.batch_size, self.config.hparams())
        with strategy.scope():  # The epoch's sranks, for a resume in the middle of an epoch.
            self._mixing_sranks = tf.Variable(tf.zeros_like(self.step.cell_weights),
                                              trainable=False, name="mixing_sranks")
        return self.step

    def checkpoint_state(self):
        return {"msr_mixing": self.step.cell_weights, "msr_mixing_sranks": self._mixing_sranks}

    def describe(self):
        return "MSR-DARTS: alphas unused, per-cell softmax(-srank) mixing"

    def refresh_mixing(self):
        """Every cell's softmax(-srank) from the current kernels: the mixing
        weights until the next refresh (each epoch start, and before a selection
        of a restored search)."""
        sranks, weights = cell_mixing(self.model, self.shapes)
        self._mixing_sranks.assign(sranks)
        self.step.set_cell_weights(weights)

    def start_epoch(self, epoch, epochs, fresh):
        super().start_epoch(epoch, epochs, fresh)
        if fresh:  # Else the checkpoint restored the epoch's mixing.
            self.refresh_mixing()

    def restored_for_selection(self):
        self.refresh_mixing()

    def write_epoch(self, number, result, alphas_dir, writer):
        """The per-cell sranks and mixing weights the epoch trained with, the
        end-of-epoch scores, and heatmaps of the mean srank per cell type (what
        selection ranks)."""
        write_json(os.path.join(alphas_dir, f"epoch_{number:03d}.json"), {
            "primitives": list(self.model.primitives), "method": "msr",
            "mixing_srank": self._mixing_sranks.numpy().tolist(),
            "mixing": self.step.cell_weights.numpy().tolist(),
            "selection": self.config.selection, "scores": result.scores})
        mean_sranks = {kind: result.scores[kind] for kind in self.model.space.cell_types}
        writer.heatmaps(number, "srank", mean_sranks, self.model.primitives, "mean stable rank")
        return {}
