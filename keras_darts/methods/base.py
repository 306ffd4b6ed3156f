"""What a search method is: the plug-in interface the search harness
(keras_darts/runs/search_run.py) drives without knowing which method it runs.

A method is a subclass of `SearchMethod`, registered with
`@methods.register`.  Its class attributes declare what it is and what it
supports; its instance, made from the run's config, builds the supernet and
the step, names its extra checkpoint state, and has hooks that the harness
calls at fixed points of every run:

    method = methods.get(config.method)(config)
    method.check(strategy)                        # before anything is written
    model = method.build_supernet(num_classes, image_shape)    # in strategy.scope()
    step = method.build_step(model, strategy)                  # in strategy.scope()
    checkpoint = tf.train.Checkpoint(..., **method.checkpoint_state())
    method.run_epochs(run)       # default: run.run_epoch(epoch) for each epoch left:
        step.set_weight_lr(method.weight_lr(epoch, epochs))
        method.start_epoch(epoch, epochs, fresh)
        ... step.step(train_batch, val_batch if method.trains_alphas else None) ...
        scalars = method.write_epoch(number, result, alphas_dir, writer)
    method.end_of_run(summary)

Tools that study a trained supernet (tools/rank_correlation.py) ask the method
for `random_genotypes(rng, count)` of its space and `score_genotype(run,
genotype, index)` inside the restored supernet, so they never ask which method
made the run.

docs/extending.md walks through adding one.
"""

import os

from keras_darts import schedules
from keras_darts.errors import ConfigError
from keras_darts.infra.fileio import write_json
from keras_darts.methods.bilevel import BilevelSearch
from keras_darts.settings import NoSettings
from keras_darts.space import plans
from keras_darts.space.supernet import SearchNetwork

ALL_STRATEGIES = ("default", "mirrored", "multi_worker")
# Config fields that describe a cell supernet (see SearchMethod.cell_supernet).
CELL_FLAGS = ("space", "primitives", "nodes", "stem_multiplier", "recompute")
# Draws per requested architecture before `random_genotypes` gives up (a space
# smaller than the request).
SAMPLE_ATTEMPTS_PER_ARCH = 100


class SearchMethod:
    """A search method (see the module docstring).  Class attributes:

      name: the `--method` value.
      description: one line for `--method`'s help.
      Settings: the dataclass of its own config section and flags
        (keras_darts/settings.py); `NoSettings` if it has none.
      strategies: the resolved `--strategy` values it runs under.
      strategy_note: why it supports only those (for the error message).
      trains_alphas: its steps update architecture weights from a val batch;
        False: weight-only steps (the harness then reads no val batches).
      implied: config fields the method fixes, {field: value}: applied when the
        flag is not given, and any other value is refused.
      lr_options: options of the weight learning-rate schedules (--w_lr_schedule).
      relaxation: the `--relaxation` value that also selects this method (flag
        files of before methods were plug-ins said `--relaxation=single_edge`
        for EDAS); None for none.
      cell_supernet: it searches a cell space (the flags of CELL_FLAGS shape
        its supernet); False: those flags would be ignored, so any value other
        than their default is refused (e.g. HyperCuboid's grid).
      fixed_on_resume: config fields free on --resume elsewhere that this
        method's computation depends on (NAO-V2 splits --epochs into rounds).
    """

    name = None
    description = ""
    Settings = NoSettings
    strategies = ALL_STRATEGIES
    strategy_note = ""
    trains_alphas = True
    implied = {}
    lr_options = {}
    relaxation = None
    cell_supernet = True
    fixed_on_resume = ()

    def __init__(self, config):
        self.config = config
        self.settings = config.method_settings
        self.model = None
        self.step = None

    # -- checks ----------------------------------------------------------------
    def check(self, strategy):
        """Raises ConfigError for a configuration this method cannot run
        (`strategy`: the resolved --strategy); called before any output."""
        for field, needed in self.implied.items():
            value = getattr(self.config, field)
            if value != needed:
                raise ConfigError(f"--method={self.name} needs --{field}={needed} (or no "
                                  f"--{field}), got {value!r}")
        if not self.cell_supernet:
            for name, default in self.config.changed_fields(CELL_FLAGS).items():
                raise ConfigError(f"--{name} does not apply to --method={self.name} (it "
                                  f"searches no cells); leave it at {default!r}")
        if strategy not in self.strategies:
            note = f" {self.strategy_note}" if self.strategy_note else ""
            raise ConfigError(f"--method={self.name}{note}: it supports only --strategy="
                              f"{'|'.join(self.strategies)} (--strategy={self.config.strategy} "
                              f"means {strategy} here)")

    # -- building --------------------------------------------------------------
    def build_supernet(self, num_classes, image_shape):
        """The supernet of this method for the config's space (in strategy.scope())."""
        cfg = self.config
        self.model = SearchNetwork(
            num_classes, channels=cfg.channels, num_layers=cfg.layers, space=cfg.search_space(),
            input_shape=image_shape, stem_multiplier=cfg.stem_multiplier,
            recompute=cfg.recompute, mixing=cfg.weighting)
        return self.model

    def build_step(self, model, strategy):
        """The object whose `step(train_batch, val_batch)` the harness runs (a
        `BilevelSearch` or a subclass), made in strategy.scope()."""
        self.step = BilevelSearch(model, strategy, self.config.batch_size, self.config.hparams())
        return self.step

    def checkpoint_state(self):
        """{name: trackable} the checkpoint holds besides the supernet, both
        optimizers, epoch and step (e.g. state a resumed epoch needs)."""
        return {}

    def describe(self):
        """What the search trains, for the start-of-run log line."""
        shapes = {tuple(a.shape) for a in self.model.arch_variables}
        return f"alphas {len(self.model.arch_variables)} x {', '.join(map(str, shapes))}"

    # -- hooks -----------------------------------------------------------------
    def run_epochs(self, run):
        """The search's epochs left after a resume, through the harness's phase
        API (keras_darts/runs/search_run.py); a method with work between epochs
        (NAO-V2's rounds) runs its own loop of `run.run_epoch(epoch)`."""
        for epoch in range(int(run.epoch.numpy()), self.config.epochs):
            run.run_epoch(epoch)

    def weight_lr(self, epoch, epochs):
        """The weight learning rate of 0-based search `epoch`."""
        cfg = self.config
        options = {**schedules.config_options(cfg, "w_lr"), **self.lr_options}
        return schedules.lr(cfg.w_lr_schedule, epoch, epochs, cfg.w_lr, cfg.w_lr_min, **options)

    def start_epoch(self, epoch, epochs, fresh):
        """Before the steps of a search epoch; `fresh`: the epoch starts at its
        first step (False: resumed from a checkpoint saved inside it)."""
        self.step.set_progress(epoch, epochs)

    def restored_for_selection(self):
        """After `keras_darts.select` restored a finished search, before selecting."""

    def write_epoch(self, number, result, alphas_dir, writer):
        """Writes the per-epoch architecture artefacts (alphas_dir/epoch_NNN.json,
        TensorBoard heatmaps) of epoch `number`; returns extra scalars to log."""
        model = self.model
        probs = model.arch_probabilities()
        write_json(os.path.join(alphas_dir, f"epoch_{number:03d}.json"), {
            "primitives": list(model.primitives),
            "alpha": {cell: alpha.numpy().tolist() for cell, alpha in model.alphas.items()},
            "softmax": {cell: p.tolist() for cell, p in probs.items()},
            "selection": self.config.selection, "scores": result.scores})
        writer.alphas(number, probs, model.primitives)
        if number == 1:  # Committed with epoch 1's checkpoint: once per run.
            writer.trajectory_layout(list(probs), len(next(iter(probs.values()))))
        writer.alpha_trajectories(number, probs, model.primitives)
        for cell, alpha in model.alphas.items():
            writer.histogram(number, f"alpha_histogram/{cell}", alpha.numpy().ravel())
        return {"lr/alphas": self.config.a_lr} if self.trains_alphas else {}

    def end_of_run(self, summary):
        """After the final genotype is written, before results.json: `summary`
        is the results dict; returns it (a method may add entries)."""
        return summary

    # -- studying a trained supernet -------------------------------------------
    def random_genotypes(self, rng, count):
        """`count` distinct uniformly random genotypes of this method's space
        (`rng`: a numpy Generator).  Cell spaces: every node keeps
        `inputs_per_node` inputs (distinct where the space says so, listed in
        ascending order), each with an op drawn uniformly from the space's
        candidate ops (never `never_chosen`, e.g. `none`); concat by the space's
        rule.  A method without a cell space raises ConfigError."""
        if not self.cell_supernet:
            raise ConfigError(f"--method={self.name} searches no cell space: it has no random "
                              "architectures to sample")
        space = self.config.search_space()
        ops = [space.primitives[k] for k in space.candidate_ops()]
        seen, genotypes = set(), []
        for _ in range(SAMPLE_ATTEMPTS_PER_ARCH * count):
            genotype = space.genotype({t: _random_cell(rng, space, ops) for t in space.cell_types})
            if genotype not in seen:
                seen.add(genotype)
                genotypes.append(genotype)
                if len(genotypes) == count:
                    return genotypes
        raise ConfigError(f"the space of this run has fewer than {count} distinct "
                          f"architectures (found {len(genotypes)}); ask for fewer")

    def score_genotype(self, run, genotype, index):
        """Accuracy of the discrete `genotype` inside the trained supernet of
        `run` (a restored `SearchRun`), as this method scores architectures;
        `index` numbers the genotype in its study (a method drawing a random
        batch per architecture seeds it with the index).  Default: only the
        genotype's ops on its edges, BatchNorm batch statistics, on all of
        search-val (what tools/compare_selection.py reports)."""
        _, accuracy = run.evaluate(run.data.search_val_eval, plans.Discrete(genotype))
        return float(accuracy)


def _random_cell(rng, space, ops):
    """(op, input) pairs of one uniformly random cell of a `SearchSpace`."""
    pairs = []
    for node in range(space.num_nodes):
        inputs = rng.choice(space.num_cell_inputs + node, size=space.inputs_per_node,
                            replace=not space.distinct_inputs)
        pairs += [(ops[rng.integers(len(ops))], int(j)) for j in sorted(inputs)]
    return pairs
