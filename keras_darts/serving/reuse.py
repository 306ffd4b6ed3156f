"""Reuse an exported network (`keras_darts.serving.savedmodel`) inside a new Keras 3 model.

`tensorflow_hub.KerasLayer` is a tf-keras (Keras 2) layer and cannot be placed
in a Keras 3 model, and `keras.layers.TFSMLayer` copies the weights into new
variables that the reloaded functions never read, so fine-tuning through it
changes nothing.  `load_layer` wraps the reloaded module's own variables
instead:

    features = keras_darts.serving.reuse.load_layer("export/feature_extractor")
    inputs = keras.Input((32, 32, 3))              # RGB pixel values in [0, 255]
    outputs = keras.layers.Dense(5)(features(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), ...)
    model.fit(...)                                 # updates the reloaded weights

Any SavedModel following TF Hub's reusable conventions works (`__call__(inputs,
training)`, `variables`, `trainable_variables`, `regularization_losses`); this
module needs only TensorFlow and Keras.
"""

import keras
import tensorflow as tf

from keras_darts.errors import ConfigError


def _adopt(variable, trainable):
    """A Keras variable backed by `variable` itself (not a copy), so Keras
    optimizers update the very variable the reloaded functions read."""
    name = variable.name.split(":")[0].replace("/", "_")  # Keras names cannot hold "/".
    # Since Keras 3.10 the TF backend's constructor adopts a tf.Variable as it is
    # (3.8 and 3.9 copied it; setup.py asks for >= 3.12, what TF 2.21 needs).
    wrapper = keras.Variable(variable, trainable=trainable, name=name)
    if wrapper.value is not variable:
        raise RuntimeError(f"Keras {keras.__version__} copies a tf.Variable given to "
                           "keras.Variable; reusing a SavedModel needs Keras >= 3.10")
    return wrapper


class ReusedModule(keras.layers.Layer):
    """A reusable SavedModel as a Keras 3 layer.

    Args:
      path: the SavedModel directory.
      trainable: fine-tune its trainable variables; False freezes them (and
        keeps BatchNorm in inference mode even when the model trains).
      add_regularization_losses: add the module's `regularization_losses`
        (for keras_darts exports: the recipe's weight decay as 0.5 * wd * |w|^2)
        to the model's losses while training.
    """

    def __init__(self, path, trainable=True, add_regularization_losses=False, **kwargs):
        super().__init__(**kwargs)
        self.module_path = str(path)
        self.add_regularization_losses = add_regularization_losses
        try:
            self.module = tf.saved_model.load(self.module_path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load a SavedModel from {self.module_path}: "
                              f"{str(e).splitlines()[0]}") from None
        missing = [a for a in ("__call__", "variables", "trainable_variables")
                   if not hasattr(self.module, a)]
        if missing:
            raise ConfigError(f"{self.module_path} is not a reusable SavedModel (no {missing})")
        trainable_ids = {id(v) for v in self.module.trainable_variables}
        self.module_variables = [_adopt(v, id(v) in trainable_ids)
                                 for v in self.module.variables]
        self.trainable = trainable  # Now that the variables exist: freezes them too.
        self.built = True

    def call(self, inputs, training=False):
        training = bool(training) and self.trainable
        outputs = self.module(inputs, training)
        if training and self.add_regularization_losses:
            for loss in getattr(self.module, "regularization_losses", []):
                self.add_loss(loss())
        return outputs

    def get_config(self):
        return {**super().get_config(), "path": self.module_path,
                "add_regularization_losses": self.add_regularization_losses}


def load_layer(path, trainable=True, **kwargs):
    """`ReusedModule(path, trainable, **kwargs)`: a reusable SavedModel as a Keras 3 layer."""
    return ReusedModule(path, trainable=trainable, **kwargs)
