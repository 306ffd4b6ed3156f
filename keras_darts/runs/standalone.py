"""Stand-alone training of candidate architectures, to rank them by what they
reach on their own (docs/methods/nao_v2.md#final-re-rank): each genotype is
trained from scratch by `keras_darts.train`'s run (runs/train_run.py) on the
search's training part of the train split and scored on its held-out part
(`--validation_portion`), never on the test split.

Every candidate trains in its own output directory, so an interrupted ranking
resumes the candidate it stopped in and skips the finished ones (their
results.json is read back).
"""

import dataclasses
import os


from keras_darts.config import TrainConfig
from keras_darts.infra import fileio
from keras_darts.runs.lifecycle import checkpoint_paths
from keras_darts.runs.train_run import run_train
from keras_darts.space import genotype as genotype_lib

# NAO-V2's re-rank recipe at the search size (its spec: dropout keep 0.6,
# drop-path keep 0.8, auxiliary weight 0.4, cosine 0.025 -> 0.001).
RERANK_RECIPE = dict(lr=0.025, lr_min=0.001, lr_schedule="cosine", drop_path_prob=0.2,
                     dropout_rate=0.4, auxiliary=True, auxiliary_weight=0.4, cutout=0)


# The auxiliary head's 5x5 pool needs the second reduction's output at least
# 5x5: images of at least 32x32 (CIFAR's).
AUXILIARY_MIN_SIZE = 32


def standalone_config(search_config, output_dir, epochs, image_size, recipe=None):
    """The `TrainConfig` that trains a candidate of the search `search_config`
    at the search's size and data (of `image_size` pixels a side), with `recipe`
    (default RERANK_RECIPE; its auxiliary head only where it fits)."""
    cfg = search_config
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipe = dict(RERANK_RECIPE if recipe is None else recipe)
    recipe = {k: v for k, v in recipe.items() if k in fields}
    if image_size < AUXILIARY_MIN_SIZE:
        recipe["auxiliary"] = False
    return TrainConfig(
        output_dir=output_dir, genotype=os.path.join(output_dir, "candidate.json"),
        dataset=cfg.dataset, data_dir=cfg.data_dir, image_size=cfg.image_size,
        crop_padding=cfg.crop_padding, validation_portion=round(1.0 - cfg.train_portion, 12),
        channels=cfg.channels, layers=cfg.layers, epochs=int(epochs),
        batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
        steps_per_epoch=cfg.steps_per_epoch, seed=cfg.seed, strategy=cfg.strategy,
        graph_optimizer=cfg.graph_optimizer, log_every=cfg.log_every, keep_checkpoints=1,
        eval_every=0, **recipe)


def train_standalone(genotype, config, strategy=None):
    """Trains `genotype` with `config` (from `standalone_config`) under the
    caller's `strategy` (default: config.strategy's) and returns its results
    dict; a finished candidate is read back, an interrupted one resumed."""
    results_path = os.path.join(config.output_dir, "results.json")
    if fileio.exists(results_path):
        return fileio.read_json(results_path)
    fileio.makedirs(config.output_dir)
    if not fileio.exists(config.genotype):
        genotype_lib.save(genotype, config.genotype)
    resume = bool(checkpoint_paths(os.path.join(config.output_dir, "checkpoints")))
    return run_train(config, resume=resume, strategy=strategy)
