"""Every command-line flag of keras_darts, and their conversion to a config.

This is the only module that defines flags and the only one that reads FLAGS
(`to_search_config`, `to_select_config`, `to_compare_configs`,
`to_train_config`); library code receives a `SearchConfig` or `TrainConfig`.
`keras_darts.search` defines the search flags, `keras_darts.select` only the
selection flags, `tools/compare_selection.py` only its own (so a flag a program
would ignore is an error, not silently dropped), `keras_darts.train` the
training flags and `keras_darts.export` the export flags.  The train and export
definitions take a `flag_values` so tests can parse them beside the search's.
"""

import dataclasses
import os

from absl import flags

from keras_darts import data, edas, eval_net, msr, ops, runtime, search_step, selection, train_step
from keras_darts.config import SearchConfig, TrainConfig
from keras_darts.errors import ConfigError
from keras_darts.selection import perturbation
from keras_darts.supernet import RECOMPUTE_POLICIES

FLAGS = flags.FLAGS
_DEFAULTS = SearchConfig(output_dir="")
_TRAIN_DEFAULTS = TrainConfig(output_dir="")


def _define_selection_flags():
    flags.DEFINE_enum("selection", _DEFAULTS.selection, list(selection.names()),
                      "How the genotype is read out of the supernet: magnitude (DARTS), "
                      "stable_rank (minimum stable rank read-out, MSR-DARTS sect. 3.6), "
                      "perturbation (DARTS-PT: progressive op/edge removal with tuning "
                      "after the search).")
    _define_criterion_flags()


def _define_criterion_flags():
    """The settings of individual criteria."""
    d = _DEFAULTS
    flags.DEFINE_integer("pt_proj_intv", d.pt_proj_intv, "perturbation: tuning epochs "
                         "between decisions (published scripts: 5).", lower_bound=1)
    flags.DEFINE_enum("pt_crit_normal", d.pt_crit_normal, list(perturbation.CRITERIA),
                      "perturbation: score normal-cell decisions by validation accuracy "
                      "or loss.")
    flags.DEFINE_enum("pt_crit_reduce", d.pt_crit_reduce, list(perturbation.CRITERIA),
                      "perturbation: the same for reduction cells.")
    flags.DEFINE_enum("msr_shapes", d.msr_shapes, ["code", "actual"],
                      "stable_rank: spatial size each edge is scored at; 'code' = the MSR-DARTS "
                      "code's (the cell's input size, halved for stride-2 edges), 'actual' = "
                      "the size the edge runs at.")


def _define_data_flags(d, fv):
    """--dataset, --data_dir, --image_size, --crop_padding (defaults from config `d`)."""
    flags.DEFINE_string("dataset", d.dataset,
                        "Dataset: 'digits' (offline default, scikit-learn's 8x8 digits), "
                        "'tfds:NAME' (tensorflow-datasets from --data_dir) or 'folder:PATH' "
                        "(class-per-folder image tree).", flag_values=fv)
    flags.DEFINE_string("data_dir", d.data_dir, "Local tensorflow-datasets data_dir.",
                        flag_values=fv)
    flags.DEFINE_integer("image_size", d.image_size, "Resize images to this many pixels "
                         "square; 0 keeps the dataset's size (folders: 32).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("crop_padding", d.crop_padding, "Zero padding (pixels) of the random "
                         "crop augmentation; -1 = max(1, size // 8).", lower_bound=-1,
                         flag_values=fv)


def _define_runtime_flags(d, fv):
    """Output, resume, distribution, Grappler, logging and checkpoint flags; the
    output directory is required."""
    flags.DEFINE_string("output_dir", None, "Directory for everything the run writes.",
                        flag_values=fv)
    flags.DEFINE_boolean("resume", False, "Continue from the latest checkpoint in --output_dir.",
                         flag_values=fv)
    flags.DEFINE_enum("strategy", d.strategy, list(runtime.STRATEGIES),
                      "tf.distribute strategy: 'default' (one device), 'mirrored' (all "
                      "local GPUs), 'multi_worker' (search only: every GPU of every worker of "
                      "the TF_CONFIG cluster; README 'Several GPUs and several machines'), 'auto' "
                      "(multi_worker if TF_CONFIG names several tasks, else mirrored with "
                      "more than one GPU, else default).", flag_values=fv)
    flags.DEFINE_enum("graph_optimizer", d.graph_optimizer,
                      list(runtime.GRAPH_OPTIMIZER_MODES),
                      "Grappler effort: 'fast_compile' (CPU default), 'full', 'auto'.",
                      flag_values=fv)
    flags.DEFINE_integer("log_every", d.log_every, "Print progress every N steps; 0 = only "
                         "per epoch.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("keep_checkpoints", d.keep_checkpoints,
                         "Checkpoints kept in --output_dir/checkpoints.", lower_bound=1,
                         flag_values=fv)
    flags.mark_flag_as_required("output_dir", flag_values=fv)


def define_search_flags():
    """The flags of `python -m keras_darts.search` (idempotent)."""
    if "dataset" in FLAGS:
        return
    d = _DEFAULTS
    _define_data_flags(d, FLAGS)
    flags.DEFINE_float("train_portion", d.train_portion, "Fraction of the train split (its "
                       "first part) that trains the weights; the rest is search-val (alphas; "
                       "--method=msr: only reported). Strictly between 0 and 1.")
    # Supernet.
    flags.DEFINE_integer("channels", d.channels, "Initial channels C of the supernet.",
                         lower_bound=2)
    flags.DEFINE_integer("layers", d.layers, "Number of cells; reductions at 1/3 and 2/3.",
                         lower_bound=1)
    flags.DEFINE_integer("nodes", d.nodes, "Intermediate nodes per cell.", lower_bound=1)
    flags.DEFINE_enum("primitives", d.primitives, list(ops.op_sets()),
                      "Candidate op set (alpha columns).")
    flags.DEFINE_integer("stem_multiplier", d.stem_multiplier,
                         "The stem outputs stem_multiplier * C channels.", lower_bound=1)
    # Search.
    flags.DEFINE_enum("method", d.method, list(msr.METHODS),
                      "darts: bilevel search of alphas and weights; blank: DARTS-PT's "
                      "fix-alpha baseline (alphas never updated, in the search and in "
                      "perturbation tuning); msr: MSR-DARTS (no alphas; "
                      "spectrally normalised 4-op supernet mixed by softmax(-stable rank) per "
                      "cell; implies --primitives=msr --selection=stable_rank).")
    flags.DEFINE_integer("epochs", d.epochs, "Search epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size of both the train "
                         "and the val batch of a step.", lower_bound=1)
    flags.DEFINE_integer("eval_batch_size", d.eval_batch_size,
                         "Batch size for evaluation; 0 = --batch_size.", lower_bound=0)
    flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Search steps per epoch; "
                         "0 = one pass over search-train.", lower_bound=0)
    flags.DEFINE_enum("order", d.order, list(search_step.ORDERS),
                      "Architecture gradient: 'first' = first-order DARTS (DARTS_V1); "
                      "'second' = the unrolled gradient with a finite-difference "
                      "Hessian-vector product (DARTS_V2, ~2.5x the step cost).")
    flags.DEFINE_enum("relaxation", d.relaxation, ["full", "single_edge"],
                      "'full' = DARTS (every edge mixed); 'single_edge' = EDAS (one sampled "
                      "edge per step mixed, every other edge clamped to the derived "
                      "architecture).")
    flags.DEFINE_enum("edas_clamp", d.edas_clamp, list(edas.CLAMPS),
                      "single_edge: 'derived' = clamp to the DARTS-derived cell (2 edges per "
                      "node ON with their argmax op, the rest OFF); 'per_edge_argmax' = every "
                      "edge ON with its argmax op ('none' allowed).")
    flags.DEFINE_enum("edas_edges_per_step", d.edas_edges_per_step, list(edas.EDGES_PER_STEP),
                      "single_edge: relax one edge per cell type, or one edge of all.")
    flags.DEFINE_enum("edas_edge_sampling", d.edas_edge_sampling, list(edas.EDGE_SAMPLINGS),
                      "single_edge: i.i.d. uniform edges, or a fresh random permutation "
                      "per pass (every edge equally often).")
    flags.DEFINE_float("edas_tau0", d.edas_tau0, "single_edge: softmax temperature of the "
                       "relaxed edge at the start, annealed linearly to 1.", lower_bound=1e-3)
    flags.DEFINE_float("edas_eps", d.edas_eps, "single_edge: probability that a clamped ON "
                       "edge runs a random op instead (decayed linearly to 0 by mid-search).",
                       lower_bound=0.0, upper_bound=1.0)
    _define_selection_flags()
    flags.DEFINE_integer("seed", d.seed, "Random seed (weights, alphas, data order).")
    flags.DEFINE_float("w_lr", d.w_lr, "Weight SGD learning rate (cosine-annealed).",
                       lower_bound=0.0)
    flags.DEFINE_float("w_lr_min", d.w_lr_min, "Final weight learning rate.", lower_bound=0.0)
    flags.DEFINE_float("w_momentum", d.w_momentum, "Weight SGD momentum.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("w_weight_decay", d.w_weight_decay, "Weight L2 decay (coupled).",
                       lower_bound=0.0)
    flags.DEFINE_float("w_grad_clip", d.w_grad_clip, "Global gradient-norm clip of weights.",
                       lower_bound=0.0)
    flags.DEFINE_float("a_lr", d.a_lr, "Alpha Adam learning rate.", lower_bound=0.0)
    flags.DEFINE_float("a_beta_1", d.a_beta_1, "Alpha Adam beta_1.", lower_bound=0.0,
                       upper_bound=1.0)
    flags.DEFINE_float("a_beta_2", d.a_beta_2, "Alpha Adam beta_2.", lower_bound=0.0,
                       upper_bound=1.0)
    flags.DEFINE_float("a_weight_decay", d.a_weight_decay, "Alpha L2 decay (coupled).",
                       lower_bound=0.0)
    # Runtime.
    _define_runtime_flags(d, FLAGS)
    flags.DEFINE_enum("recompute", d.recompute, list(RECOMPUTE_POLICIES),
                      "Supernet edges whose activations backprop recomputes instead of "
                      "storing: 'all' (least memory), 'first_stage', 'none' (fastest).")


def _define_source_flags(output_help):
    """--checkpoint (a searched supernet, only read), --output_dir, --data_dir."""
    flags.DEFINE_string("checkpoint", None, "Output directory of a finished (or interrupted) "
                        "search: its config.json and latest checkpoint are used.")
    flags.DEFINE_string("output_dir", None, output_help)
    flags.DEFINE_string("data_dir", None, "Override the search's --data_dir (tfds datasets).")
    flags.mark_flag_as_required("checkpoint")
    flags.mark_flag_as_required("output_dir")


def define_select_flags():
    """The flags of `python -m keras_darts.select` (idempotent)."""
    if "checkpoint" in FLAGS:
        return
    _define_source_flags("Where to write this selection's genotype.json, results.json, "
                         "scores and TensorBoard (must be new or empty).")
    _define_selection_flags()


def define_compare_flags():
    """The flags of `tools/compare_selection.py` (idempotent)."""
    if "criteria" in FLAGS:
        return
    _define_source_flags("Where to write comparison.md, comparison.csv, tensorboard/ and "
                         "one selection directory per criterion (must be new or empty).")
    flags.DEFINE_list("criteria", list(selection.names()), "Comma-separated selection "
                      "criteria to run, in this order (default: all of "
                      f"{', '.join(selection.names())}).")
    _define_criterion_flags()


_CRITERION_FIELDS = ("msr_shapes", "pt_proj_intv", "pt_crit_normal", "pt_crit_reduce")


def _criterion_changes(flag_values):
    changes = {name: flag_values[name].value for name in _CRITERION_FIELDS}
    if flag_values.data_dir:
        changes["data_dir"] = flag_values.data_dir
    return changes


def _selection_strategy(saved):
    """Selection runs in one process: a search run by a cluster (or by `auto`,
    which may have meant one) is selected on every local device."""
    return "mirrored" if saved.strategy in ("multi_worker", "auto") else saved.strategy


def to_select_config(saved, flag_values=FLAGS):
    """The search's saved config with this selection's settings and output dir."""
    selected = flag_values.selection
    if saved.method == "msr" and not flag_values["selection"].present:
        selected = msr.SELECTION
    return dataclasses.replace(saved, selection=selected, output_dir=flag_values.output_dir,
                               strategy=_selection_strategy(saved),
                               **_criterion_changes(flag_values))


def to_compare_configs(saved, flag_values=FLAGS):
    """{criterion: the search's saved config selecting with it into
    --output_dir/<criterion>}, in --criteria order."""
    names = list(flag_values.criteria)
    if not names:
        raise ConfigError("--criteria is empty; name at least one of "
                          f"{', '.join(selection.names())}")
    unknown = [name for name in names if name not in selection.names()]
    if unknown:
        raise ConfigError(f"unknown criterion '{unknown[0]}' in --criteria; available: "
                          f"{', '.join(selection.names())}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--criteria lists {', '.join(repeated)} more than once")
    changes = _criterion_changes(flag_values)
    return {name: dataclasses.replace(saved, selection=name,
                                      output_dir=os.path.join(flag_values.output_dir, name),
                                      strategy=_selection_strategy(saved), **changes)
            for name in names}


def to_search_config(flag_values=FLAGS):
    """The `SearchConfig` described by the parsed flags."""
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    values = {name: flag_values[name].value for name in fields}
    if values["method"] == "msr":
        # MSR-DARTS has one space and one read-out: they replace the defaults of
        # flags not given; a different value given is refused by msr.check_config.
        values.update({name: value for name, value in msr.IMPLIED_SETTINGS.items()
                       if not flag_values[name].present})
    return SearchConfig(**values)


def define_train_flags(fv=FLAGS):
    """The flags of `python -m keras_darts.train` (idempotent)."""
    if "genotype" in fv:
        return
    d = _TRAIN_DEFAULTS
    flags.DEFINE_string("genotype", None, "The genotype to train: a registered name (e.g. "
                        "DARTS_V2; see README) or a genotype JSON file (e.g. a search's "
                        "genotype.json).", flag_values=fv)
    flags.mark_flag_as_required("genotype", flag_values=fv)
    # Data.
    _define_data_flags(d, fv)
    flags.DEFINE_integer("cutout", d.cutout, "Side (pixels) of the square cutout zeroes in "
                         "every training image; 0 = no cutout.", lower_bound=0, flag_values=fv)
    flags.DEFINE_enum("augmentation", d.augmentation, list(data.TRAIN_AUGMENTATIONS),
                      "Training augmentation: 'crop_flip' (pad, random crop, flip: the CIFAR "
                      "recipe) or 'imagenet' (random resized crop, flip, colour jitter; test "
                      "images resized to 8/7 of --image_size and centre-cropped: the ImageNet "
                      "recipe).", flag_values=fv)
    # Network.
    flags.DEFINE_enum("network", d.network, list(eval_net.NETWORKS),
                      "'cifar' (one 3x3 conv stem, NetworkCIFAR) or 'imagenet' (three "
                      "stride-2 stem convs, NetworkImageNet).", flag_values=fv)
    flags.DEFINE_integer("channels", d.channels, "Initial channels C (the CIFAR stem has 3C).",
                         lower_bound=2, flag_values=fv)
    flags.DEFINE_integer("layers", d.layers, "Number of cells; reductions at 1/3 and 2/3.",
                         lower_bound=3, flag_values=fv)
    flags.DEFINE_boolean("auxiliary", d.auxiliary, "Train with the auxiliary head on the "
                         "output of cell 2*layers//3.", flag_values=fv)
    flags.DEFINE_float("auxiliary_weight", d.auxiliary_weight, "Weight of the auxiliary "
                       "loss.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("drop_path_prob", d.drop_path_prob, "Drop-path probability of the "
                       "last epoch; epoch e uses drop_path_prob * e / epochs.",
                       lower_bound=0.0, upper_bound=0.99, flag_values=fv)
    # Recipe.
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("eval_batch_size", d.eval_batch_size,
                         "Batch size for testing; 0 = --batch_size.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Training steps per epoch; "
                         "0 = one pass over the train split.", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("lr", d.lr, "SGD learning rate of the first epoch's schedule.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, list(train_step.LR_SCHEDULES),
                      "'cosine' (to --lr_min, CIFAR recipe) or 'exponential' (x --lr_decay "
                      "every epoch, ImageNet recipe).", flag_values=fv)
    flags.DEFINE_float("lr_min", d.lr_min, "cosine: final learning rate.", lower_bound=0.0,
                       flag_values=fv)
    flags.DEFINE_float("lr_decay", d.lr_decay, "exponential: factor per epoch.",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_float("momentum", d.momentum, "SGD momentum.", lower_bound=0.0,
                       upper_bound=1.0, flag_values=fv)
    flags.DEFINE_float("weight_decay", d.weight_decay, "L2 decay (coupled, as in the "
                       "reference).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("grad_clip", d.grad_clip, "Global gradient-norm clip.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing of the "
                       "training loss (ImageNet recipe: 0.1).", lower_bound=0.0,
                       upper_bound=1.0, flag_values=fv)
    flags.DEFINE_integer("seed", d.seed, "Random seed (weights, data order, drop path).",
                         flag_values=fv)
    # Runtime.
    flags.DEFINE_integer("eval_every", d.eval_every, "Test accuracy every N epochs; 0 = "
                         "only after the last.", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("export_dir", d.export_dir, "After training, export the network "
                        "here (as `python -m keras_darts.export` does).", flag_values=fv)
    _define_runtime_flags(d, fv)


def to_train_config(fv=FLAGS):
    """The `TrainConfig` described by the parsed flags."""
    return TrainConfig(**{f.name: fv[f.name].value for f in dataclasses.fields(TrainConfig)})


def define_export_flags(fv=FLAGS):
    """The flags of `python -m keras_darts.export` (idempotent)."""
    if "checkpoint" in fv and "export_dir" in fv:
        return
    flags.DEFINE_string("checkpoint", None, "Output directory of `keras_darts.train`: its "
                        "config.json, genotype.json, dataset.json and latest checkpoint are "
                        "read.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "Where to write the SavedModels (must not exist "
                        "or be empty).", flag_values=fv)
    flags.DEFINE_string("genotype", "", "The genotype the checkpoint must hold (name or "
                        "JSON path); empty = the run's genotype.json.", flag_values=fv)
    flags.mark_flag_as_required("checkpoint", flag_values=fv)
    flags.mark_flag_as_required("export_dir", flag_values=fv)
