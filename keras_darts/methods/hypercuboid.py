"""sharpDARTS's HyperCuboid (differentiable hyperparameter grid search,
docs/methods/hypercuboid.md): the bilevel DARTS step over a grid supernet
(`keras_darts/space/grid_network.py`) whose alphas weigh (c_in, c_out, op)
per layer and stride stage; the result is the grid's heaviest path
(`keras_darts/space/hypercuboid.py`), written as genotype.json and path.json,
which `keras_darts.train --genotype=path.json` trains as a chain network.
"""

import dataclasses
import os

from keras_darts.errors import ConfigError
from keras_darts.infra import fileio
from keras_darts.infra.fileio import write_json
from keras_darts.methods import register
from keras_darts.methods.base import SearchMethod
from keras_darts.settings import setting
from keras_darts.space import hypercuboid
from keras_darts.space.grid_network import DEFAULT_MIN_WEIGHT, GridNetwork

@dataclasses.dataclass(frozen=True)
class HyperCuboidSettings:
    widths: int = setting(
        4, "hypercuboid_widths", "Number of grid widths: 2^(floor(log2 --channels) + i) for "
        "i < this (4 with --channels=36: 32, 64, 128, 256).", lower=1, upper=8)
    min_weight: float = setting(
        DEFAULT_MIN_WEIGHT, "hypercuboid_min_weight", "Grid ops whose coefficient is at most "
        "this are not computed (the reference's 1/32^2); 0 = compute all.", lower=0.0,
        upper=1.0)


@register
class HyperCuboid(SearchMethod):
    name = "hypercuboid"
    description = ("sharpDARTS's HyperCuboid: a grid of widths x stride stages x {pool, "
                   "SharpSepConv}, read out as its heaviest path")
    Settings = HyperCuboidSettings
    strategies = ("default", "mirrored")
    strategy_note = "(built and tested on one machine)"
    implied = {"selection": "magnitude"}
    cell_supernet = False

    def check(self, strategy):
        super().check(strategy)
        if self.config.layers < 2:
            raise ConfigError(f"--method=hypercuboid needs --layers >= 2 (the grid has "
                              f"--layers // 2 layers), got {self.config.layers}")

    def grid_space(self):
        cfg = self.config
        return hypercuboid.GridSpace(hypercuboid.grid_widths(cfg.channels, self.settings.widths),
                                     cfg.layers // 2)

    def build_supernet(self, num_classes, image_shape):
        self.model = GridNetwork(num_classes, self.grid_space(), input_shape=image_shape,
                                 mixing=self.config.weighting,
                                 min_weight=self.settings.min_weight)
        return self.model

    def describe(self):
        space = self.model.space
        return (f"grid: widths {list(space.widths)}, {space.num_layers} layers x 2 stages, "
                f"alphas {space.alpha_shape}")

    def write_epoch(self, number, result, alphas_dir, writer):
        """alphas/epoch_NNN.json: the raw alphas and their softmax per stage as
        [c_in][c_out][op] cuboids; TensorBoard: per stage, the heavier op's
        weight for each (c_in, c_out)."""
        model, space = self.model, self.model.space
        alpha = model.alphas[hypercuboid.CELL_TYPE].numpy()
        probs = model.arch_probabilities()[hypercuboid.CELL_TYPE]
        write_json(os.path.join(alphas_dir, f"epoch_{number:03d}.json"), {
            "widths": list(space.widths), "ops": list(hypercuboid.GRID_OPS),
            "stages": [{"layer": layer, "stride": stride} for layer, stride in space.stages],
            "alpha": [space.cuboid(row).tolist() for row in alpha],
            "softmax": [space.cuboid(row).tolist() for row in probs],
            "selection": self.config.selection})
        heaviest = {f"l{layer}_s{stride}": space.cuboid(row).max(axis=-1)
                    for (layer, stride), row in zip(space.stages, probs)}
        writer.heatmaps(number, "grid", heaviest, [f"out {c}" for c in space.widths],
                        "max over ops of the weight", rows=[f"in {c}" for c in space.widths],
                        row_title="input width")
        return {"lr/alphas": self.config.a_lr}

    def end_of_run(self, summary):
        """Also writes the final path as path.json (the same JSON as genotype.json)."""
        root = self.config.output_dir
        fileio.copy(os.path.join(root, "genotype.json"), os.path.join(root, "path.json"))
        return summary
