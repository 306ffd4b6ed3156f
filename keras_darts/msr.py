"""MSR-DARTS's own search (`--method=msr`, specs/selection.md 3.3-3.4).

No architecture parameters are trained.  The supernet has only the 4
parameterised ops (op set "msr"); every conv inside them is spectrally
normalised in each train-mode forward; each edge mixes its ops by
softmax(-srank), srank = the H*W-scaled stable ranks of the ops' last
pointwise kernels (3.2), per cell, recomputed at the start of every epoch and
held constant (no gradient) during it; only the weights are trained (SGD, the
epoch's cosine value at cos(pi * e / epochs)).  The genotype is the
`stable_rank` criterion's: mean over the cells of a type, per node the 2
edges with the smallest min-over-ops srank.

`--msr_shapes` sets the (H, W) every edge is taken to run at, for the spectral
norm and the stable ranks alike ("code": the reference code's sizes, default).
"""

import numpy as np

from keras_darts import ops
from keras_darts.errors import ConfigError
from keras_darts.selection.stable_rank import edge_input_sizes, per_cell_sranks
from keras_darts.spectral_norm import SpectralNorm, conv_output_size
from keras_darts.supernet import SearchNetwork

# darts: alphas and weights (bilevel); blank: DARTS-PT's fix-alpha baseline (the
# DARTS supernet, alphas never updated); msr: MSR-DARTS (below).
METHODS = ("darts", "blank", "msr")
OP_SET = "msr"
SELECTION = "stable_rank"
# Flags that --method=msr sets when they are not given (cli_flags).
IMPLIED_SETTINGS = {"primitives": OP_SET, "selection": SELECTION}


def check_config(config):
    """Raises ConfigError for a --method that cannot run with the other settings."""
    if config.method not in METHODS:
        raise ConfigError(f"--method must be one of {list(METHODS)}, got {config.method!r}")
    if config.method == "darts":
        return
    if config.method == "msr":
        for name, needed in IMPLIED_SETTINGS.items():
            value = getattr(config, name)
            if value != needed:
                raise ConfigError(f"--method=msr searches MSR-DARTS's space with its own "
                                  f"read-out: it needs --{name}={needed} (or no --{name}), "
                                  f"got {value!r}")
    # No alphas are trained: alpha-step variants do not apply.
    for name, plain in (("relaxation", "full"), ("order", "first")):
        if getattr(config, name) != plain:
            raise ConfigError(f"--method={config.method} trains no alphas: --{name}="
                              f"{getattr(config, name)} does not apply (use --{name}={plain})")


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
