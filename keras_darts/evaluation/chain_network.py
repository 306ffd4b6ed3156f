"""The network a HyperCuboid path trains as (docs/methods/hypercuboid.md#chain-network):
stem 3x3 conv + BN to the path's stem width, one op per stage of the path
(ResizablePool or SharpSepConv, affine BatchNorms), SharpSepConv to 768
channels, global average pool, linear.  No auxiliary head and no drop path
(the reference's chain has neither); the attributes the trainer and the
exporter read of an `EvalNetwork` are here with the same meaning.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_darts import ops
from keras_darts.ops.layers import Linear
from keras_darts.ops.sharp_ops import SharpSepConv
from keras_darts.space import hypercuboid
from keras_darts.space.grid_network import HEAD_CHANNELS, grid_op, run_op


@keras.saving.register_keras_serializable(package="keras_darts")
class ChainNetwork(keras.Model):
    """A `GridPath` as a plain chain of ops.

    Args:
      path: a `GridPath`, a path JSON dict, or a registered path name.
      num_classes: classifier outputs.
      input_shape: (H, W, channels) of the images.
    """

    def __init__(self, path, num_classes=10, input_shape=(32, 32, 3), **kwargs):
        super().__init__(**kwargs)
        if isinstance(path, str):
            path = hypercuboid.PUBLISHED[path]
        elif isinstance(path, dict):
            path = hypercuboid.from_json_dict(path)
        self.genotype = path
        self.num_classes = num_classes
        self.image_shape = tuple(input_shape)
        self.aux_head = None  # What the exporter and the trainer look for.
        self.stem = ops.Sequential([ops.Conv(self.image_shape[-1], path.stem, 3, padding=1),
                                    ops.BatchNorm(path.stem, affine=True)], name="stem")
        self.chain = [grid_op(s.op, s.c_in, s.c_out, s.stride, affine=True)
                      for s in path.stages]
        self.head = SharpSepConv(HEAD_CHANNELS, 1, True, kernel_size=3,
                                 mid_channels=HEAD_CHANNELS, in_channels=path.out_channels,
                                 name="head")
        self.classifier = Linear(HEAD_CHANNELS, num_classes, name="classifier")
        # Present for the trainer (which sets 0 every epoch) and the exporter; unused.
        self.drop_path_prob = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                              name="drop_path_prob")
        self.drop_path_seed = self.add_weight(shape=(2,), initializer="zeros", dtype="int64",
                                              trainable=False, name="drop_path_seed")
        self.built = True

    def set_drop_path_prob(self, prob):
        if prob:
            raise ValueError("a HyperCuboid chain network has no drop path")
        self.drop_path_prob.assign(0.0)

    def count_weight_params(self, include_auxiliary=False):
        del include_auxiliary  # There is no auxiliary head.
        return int(sum(np.prod(v.shape) for v in self.trainable_variables))

    def get_config(self):
        return {**super().get_config(), "path": self.genotype.to_json_dict(),
                "num_classes": self.num_classes, "input_shape": list(self.image_shape)}

    def features(self, images, training=False):
        """The globally pooled 768 head channels [N, 768]."""
        x = self.stem(images, training=bool(training))
        for op in self.chain:
            x = run_op(op, x, tf.nn.relu(x) if op.starts_with_relu else None, bool(training))
        x = self.head(tf.nn.relu(x), training=bool(training))
        return tf.reduce_mean(x, axis=(1, 2))

    def call(self, images, training=False):
        return self.classifier(self.features(images, training))
