"""Every command-line flag of keras_darts, and their conversion to a config.

This is the only module that defines flags and the only one that reads FLAGS
(`to_search_config`, `to_select_config`, `to_compare_configs`,
`to_train_config`); library code receives a `SearchConfig` or `TrainConfig`.
`keras_darts.search` defines the search flags, `keras_darts.select` only the
selection flags, `tools/compare_selection.py` and `tools/rank_correlation.py`
only their own (so a flag a program would ignore is an error, not silently
dropped), `keras_darts.train` the training flags and `keras_darts.export` the
export flags.  The train and export
definitions take a `flag_values` so tests can parse them beside the search's.

Plug-ins declare their own flags: every field of a registered method's or
criterion's settings dataclass (keras_darts/settings.py) becomes a flag here,
and only the chosen plug-in's flags may differ from their defaults.
"""

import dataclasses
import os

from absl import flags

from keras_darts import data, methods, ops, selection
from keras_darts import settings as settings_lib
from keras_darts.config import SearchConfig, TrainConfig
from keras_darts.errors import ConfigError
from keras_darts.evaluation import networks as eval_net
from keras_darts.evaluation import train_step
from keras_darts.infra import runtime
from keras_darts.space import mixing, search_space
from keras_darts.space.supernet import RECOMPUTE_POLICIES

FLAGS = flags.FLAGS
_DEFAULTS = SearchConfig(output_dir="")
_TRAIN_DEFAULTS = TrainConfig(output_dir="")
_PLUGIN_SECTIONS = ("method_settings", "selection_settings")


# -- plug-in settings as flags -------------------------------------------------------
def _define_settings_flags(settings_cls, fv=FLAGS):
    """One flag per flag-set field of `settings_cls` (a field whose flag another
    plug-in already defined shares it)."""
    for field in settings_lib.flagged_fields(settings_cls):
        name, meta, default = settings_lib.flag_name(field), field.metadata, field.default
        if name in fv:
            continue
        bounds = {"lower_bound": meta["lower"], "upper_bound": meta["upper"]}
        if meta["choices"]:
            flags.DEFINE_enum(name, default, list(meta["choices"]), meta["help"], flag_values=fv)
        elif isinstance(default, bool):
            flags.DEFINE_boolean(name, default, meta["help"], flag_values=fv)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, meta["help"], flag_values=fv, **bounds)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, meta["help"], flag_values=fv, **bounds)
        else:
            flags.DEFINE_string(name, default, meta["help"], flag_values=fv)


def _settings_from_flags(settings_cls, fv, what, start=None):
    """`settings_cls` from the parsed flags: `start` (settings of the same class,
    e.g. a saved run's) with the flags given on this command line, or every
    flag's value if there is no `start`."""
    values = settings_lib.to_dict(start) if start is not None else {}
    for field in settings_lib.flagged_fields(settings_cls):
        flag = fv[settings_lib.flag_name(field)]
        if start is None or flag.present:
            values[field.name] = flag.value
    return settings_lib.from_dict(settings_cls, values, what)


def _flag_names(*settings_classes):
    return {settings_lib.flag_name(f) for cls in settings_classes
            for f in settings_lib.flagged_fields(cls)}


def _refuse_foreign_flags(fv, own, owners, reason=""):
    """A flag of another plug-in (owners: {label: settings class}; `own`: the
    flag names the run uses) given with a non-default value is an error: it
    would be silently ignored."""
    for label, settings_cls in owners.items():
        for field in settings_lib.flagged_fields(settings_cls):
            name = settings_lib.flag_name(field)
            if name not in own and fv[name].present and fv[name].value != field.default:
                raise ConfigError(f"--{name} only applies to {label}{reason}")


def _method_label(name):
    alias = methods.get(name).relaxation
    return f"--relaxation={alias} (= --method={name})" if alias else f"--method={name}"


def _criterion_owners(exclude):
    return {f"--selection={name}": selection.get(name).Settings for name in selection.names()
            if name not in exclude}


# -- selection flags -------------------------------------------------------------------
def _define_selection_flags(fv=FLAGS):
    flags.DEFINE_enum("selection", _DEFAULTS.selection, list(selection.names()),
                      "How the genotype is read out of the supernet: magnitude (DARTS), "
                      "stable_rank (minimum stable rank read-out, MSR-DARTS), "
                      "perturbation (DARTS-PT: progressive op/edge removal with tuning "
                      "after the search).", flag_values=fv)
    _define_criterion_flags(fv)


def _define_criterion_flags(fv=FLAGS):
    """The settings of every registered criterion."""
    for name in selection.names():
        _define_settings_flags(selection.get(name).Settings, fv)


def _define_data_flags(d, fv):
    """--dataset, --data_dir, --image_size, --crop_padding, --resize (defaults from config `d`)."""
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
    flags.DEFINE_enum("resize", d.resize, list(data.RESIZE_MODES),
                      "How an image that is not square becomes --image_size square: 'crop' "
                      "keeps its aspect ratio (short side to size, centre crop), 'squash' "
                      "stretches it.", flag_values=fv)


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
    flags.DEFINE_string("profile_steps", d.profile_steps, "Trace steps FIRST,LAST (1-based "
                        "step numbers, inclusive) with the TF profiler into the run's "
                        "tensorboard/ (Profile tab); empty = no trace.", flag_values=fv)
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
    # Search space and supernet.
    flags.DEFINE_enum("space", d.space, list(search_space.names()),
                      "Cell search space: 'darts' = the DARTS cell (--nodes nodes, an edge "
                      "from every earlier state, --primitives ops on every edge).")
    flags.DEFINE_integer("channels", d.channels, "Initial channels C of the supernet.",
                         lower_bound=2)
    flags.DEFINE_integer("layers", d.layers, "Number of cells; reductions at 1/3 and 2/3.",
                         lower_bound=1)
    flags.DEFINE_integer("nodes", d.nodes, "Intermediate nodes per cell.", lower_bound=1)
    flags.DEFINE_enum("primitives", d.primitives, list(ops.op_sets()),
                      "Candidate op set (alpha columns): darts, darts_pt (DARTS without "
                      "none), msr; sharpDARTS's sharpsep_darts (the DARTS names built with "
                      "SharpSepConv), sharp (9 ops), sharper (12 ops).")
    flags.DEFINE_integer("stem_multiplier", d.stem_multiplier,
                         "The stem outputs stem_multiplier * C channels.", lower_bound=1)
    flags.DEFINE_enum("weighting", d.weighting, list(mixing.names()),
                      "How an edge mixes its ops: 'softmax' (DARTS: softmax(alpha)) or "
                      "'max_w' (sharpDARTS: 1 - max(softmax) + softmax, the strongest op "
                      "at full strength).")
    # Search method and its settings.
    flags.DEFINE_enum("method", d.method, list(methods.names()), "Search method: " + "; ".join(
        f"{name}: {methods.get(name).description}" for name in methods.names()) + ".")
    flags.DEFINE_enum("relaxation", "full", list(methods.relaxations()),
                      "Kept for older flag files: 'full' = the --method's own; " + "; ".join(
                          f"'{methods.get(m).relaxation}' = --method={m}" for m in methods.names()
                          if methods.get(m).relaxation) + ".")
    for name in methods.names():
        _define_settings_flags(methods.get(name).Settings)
    flags.DEFINE_integer("epochs", d.epochs, "Search epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size of both the train "
                         "and the val batch of a step.", lower_bound=1)
    flags.DEFINE_integer("eval_batch_size", d.eval_batch_size,
                         "Batch size for evaluation; 0 = --batch_size.", lower_bound=0)
    flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Search steps per epoch; "
                         "0 = one pass over search-train.", lower_bound=0)
    _define_selection_flags()
    flags.DEFINE_integer("seed", d.seed, "Random seed (weights, alphas, data order).")
    flags.DEFINE_float("w_lr", d.w_lr, "Weight SGD learning rate (annealed by "
                       "--w_lr_schedule).", lower_bound=0.0)
    flags.DEFINE_float("w_lr_min", d.w_lr_min, "Final weight learning rate.", lower_bound=0.0)
    flags.DEFINE_enum("w_lr_schedule", d.w_lr_schedule, ["cosine", "cosine_power"],
                      "Weight lr schedule: 'cosine' (DARTS) or 'cosine_power' (sharpDARTS's "
                      "cosine power annealing, --w_lr_power and --w_lr_warmup_epochs; "
                      "docs/schedules.md).")
    flags.DEFINE_float("w_lr_power", d.w_lr_power, "cosine_power: the power (>= 1; 1 = "
                       "cosine, larger decays faster early and slower late).")
    flags.DEFINE_integer("w_lr_warmup_epochs", d.w_lr_warmup_epochs, "cosine_power: epochs "
                         "of linear warmup before it reaches --w_lr; 0 = none.")
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


def _define_source_flags(output_help, fv=FLAGS):
    """--checkpoint (a searched supernet, only read), --output_dir, --data_dir."""
    flags.DEFINE_string("checkpoint", None, "Output directory of a finished (or interrupted) "
                        "search: its config.json and latest checkpoint are used.",
                        flag_values=fv)
    flags.DEFINE_string("output_dir", None, output_help, flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Override the search's --data_dir (tfds datasets).",
                        flag_values=fv)
    flags.mark_flag_as_required("checkpoint", flag_values=fv)
    flags.mark_flag_as_required("output_dir", flag_values=fv)


def define_select_flags(fv=FLAGS):
    """The flags of `python -m keras_darts.select` (idempotent)."""
    if "checkpoint" in fv:
        return
    _define_source_flags("Where to write this selection's genotype.json, results.json, "
                         "scores and TensorBoard (must be new or empty).", fv)
    _define_selection_flags(fv)


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


def define_rank_correlation_flags():
    """The flags of `tools/rank_correlation.py` (idempotent); the counts are
    checked by the tool (a bad value is a one-line error, exit 2)."""
    if "num_archs" in FLAGS:
        return
    _define_source_flags("Where to write rank_correlation.csv, summary.json, scatter.png, "
                         "candidates.json, standalone/ and tensorboard/ (new or empty; a "
                         "rerun with the same flags continues the study in it).")
    flags.DEFINE_integer("num_archs", None, "Random architectures K of the run's space to "
                         "score in the supernet and train stand-alone (at least 3).")
    flags.DEFINE_integer("standalone_epochs", None, "Stand-alone training epochs E of every "
                         "architecture (at least 1).")
    flags.DEFINE_integer("seed", 0, "Seed of the architecture sample.")
    flags.mark_flag_as_required("num_archs")
    flags.mark_flag_as_required("standalone_epochs")


def _selection_strategy(saved):
    """Selection runs in one process: a search run by a cluster (or by `auto`,
    which may have meant one) is selected on every local device."""
    return "mirrored" if saved.strategy in ("multi_worker", "auto") else saved.strategy


def _reselected(saved, name, output_dir, flag_values):
    """The search's saved config selecting with criterion `name` into
    `output_dir`: its settings are the saved run's (when it selected with the
    same criterion) with the criterion flags given here."""
    criterion = selection.get(name)
    start = saved.selection_settings if saved.selection == name else criterion.Settings()
    changes = {"selection": name, "output_dir": output_dir,
               "strategy": _selection_strategy(saved),
               "selection_settings": _settings_from_flags(
                   criterion.Settings, flag_values, f"--selection={name}", start=start)}
    if flag_values.data_dir:
        changes["data_dir"] = flag_values.data_dir
    return dataclasses.replace(saved, **changes)


def to_select_config(saved, flag_values=FLAGS):
    """The search's saved config with this selection's settings and output dir."""
    name = flag_values.selection
    implied = methods.get(saved.method).implied.get("selection")
    if implied and not flag_values["selection"].present:
        name = implied
    _refuse_foreign_flags(flag_values, _flag_names(selection.get(name).Settings),
                          _criterion_owners({name}))
    return _reselected(saved, name, flag_values.output_dir, flag_values)


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
    # A flag that no listed criterion takes would be ignored.
    used = _flag_names(*(selection.get(name).Settings for name in names))
    _refuse_foreign_flags(flag_values, used, _criterion_owners(set(names)))
    return {name: _reselected(saved, name, os.path.join(flag_values.output_dir, name),
                              flag_values)
            for name in names}


def _search_method(fv):
    """The --method the flags choose (a --relaxation may stand for one)."""
    name = fv.method
    alias = methods.by_relaxation(fv.relaxation)
    if alias is None or name == alias:
        return name
    if fv["method"].present and name != _DEFAULTS.method:
        if not methods.get(name).trains_alphas:
            raise ConfigError(f"--method={name} trains no alphas: --relaxation="
                              f"{fv.relaxation} does not apply")
        raise ConfigError(f"--relaxation={fv.relaxation} means --method={alias}, which "
                          f"contradicts --method={name}")
    return alias


def to_search_config(flag_values=FLAGS):
    """The `SearchConfig` described by the parsed flags."""
    fv = flag_values
    fields = [f.name for f in dataclasses.fields(SearchConfig) if f.name not in _PLUGIN_SECTIONS]
    values = {name: fv[name].value for name in fields}
    values["method"] = _search_method(fv)
    method = methods.get(values["method"])
    # A method's implied settings replace the defaults of flags not given; a
    # different value given is refused by the method's check.
    values.update({name: value for name, value in method.implied.items()
                   if not fv[name].present})
    reason = "" if method.trains_alphas else f": --method={method.name} trains no alphas"
    _refuse_foreign_flags(fv, _flag_names(method.Settings),
                          {_method_label(name): methods.get(name).Settings
                           for name in methods.names() if name != method.name}, reason)
    criterion = selection.get(values["selection"])
    _refuse_foreign_flags(fv, _flag_names(criterion.Settings), _criterion_owners({criterion.name}))
    return SearchConfig(
        **values,
        method_settings=_settings_from_flags(method.Settings, fv, f"--method={method.name}"),
        selection_settings=_settings_from_flags(criterion.Settings, fv,
                                                f"--selection={criterion.name}"))


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
                      "recipe), 'imagenet' (random resized crop, flip, colour jitter; test "
                      "images resized to 8/7 of --image_size and centre-cropped: the ImageNet "
                      "recipe) or 'autoaugment' (crop_flip, then the AutoAugment CIFAR-10 "
                      "policy, as in sharpDARTS; test images are never augmented).",
                      flag_values=fv)
    flags.DEFINE_float("validation_portion", d.validation_portion, "0 = train on the whole "
                       "train split, evaluate on the test split; p > 0 = train on its first "
                       "1 - p, evaluate on its last p (validation accuracy, e.g. to compare "
                       "architectures without the test set).", lower_bound=0.0,
                       upper_bound=0.9, flag_values=fv)
    # Network.
    flags.DEFINE_enum("network", d.network, list(eval_net.NETWORKS),
                      "'cifar' (one 3x3 conv stem, NetworkCIFAR) or 'imagenet' (three "
                      "stride-2 stem convs, NetworkImageNet).", flag_values=fv)
    flags.DEFINE_integer("channels", d.channels, "Initial channels C (the CIFAR stem has 3C).",
                         lower_bound=2, flag_values=fv)
    flags.DEFINE_integer("layers", d.layers, "Number of cells; reductions at 1/3 and 2/3.",
                         lower_bound=3, flag_values=fv)
    flags.DEFINE_integer("mid_channels", d.mid_channels, "Middle width of sharpDARTS's "
                         "choke ops (choke_conv_3x3, dil_choke_conv_3x3); 0 = the op family's "
                         "default (32).", lower_bound=0, flag_values=fv)
    flags.DEFINE_boolean("auxiliary", d.auxiliary, "Train with the auxiliary head on the "
                         "output of cell 2*layers//3.", flag_values=fv)
    flags.DEFINE_float("auxiliary_weight", d.auxiliary_weight, "Weight of the auxiliary "
                       "loss.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("drop_path_prob", d.drop_path_prob, "Drop-path probability of the "
                       "last epoch; epoch e uses drop_path_prob * e / epochs.",
                       lower_bound=0.0, upper_bound=0.99, flag_values=fv)
    flags.DEFINE_float("dropout_rate", d.dropout_rate, "Dropout rate on the globally pooled "
                       "features before the classifier, in training (DARTS: 0; NAO: 0.4).",
                       lower_bound=0.0, upper_bound=0.95, flag_values=fv)
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
                      "'cosine' (to --lr_min, CIFAR recipe), 'cosine_power' (sharpDARTS's "
                      "cosine power annealing to --lr_min, --lr_power, --lr_warmup_epochs) "
                      "or 'exponential' (x --lr_decay every epoch, ImageNet recipe); "
                      "docs/schedules.md.", flag_values=fv)
    flags.DEFINE_float("lr_min", d.lr_min, "cosine, cosine_power: final learning rate.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("lr_decay", d.lr_decay, "exponential: factor per epoch.",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_float("lr_power", d.lr_power, "cosine_power: the power (>= 1; 1 = cosine, "
                       "larger decays faster early and slower late; sharpDARTS: 2).",
                       flag_values=fv)
    flags.DEFINE_integer("lr_warmup_epochs", d.lr_warmup_epochs, "cosine_power: epochs of "
                         "linear warmup before it reaches --lr; 0 = none (sharpDARTS: 5).",
                         flag_values=fv)
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
