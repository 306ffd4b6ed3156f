"""SavedModel export of a trained evaluation network, loadable without keras_darts.

`export_network` writes two SavedModels into a new directory:

  classifier/         `serving_default`: images -> {"logits", "probabilities"}
  feature_extractor/  `serving_default`: images -> {"features"}, no classifier

Both hold the genotype's network without its training-only parts (no
auxiliary head, no drop path) and follow TF Hub's reusable SavedModel
conventions, so they can be fine-tuned elsewhere (`keras_darts.serving.reuse`):
`__call__(images, training=False)` (logits / features; `training` switches
BatchNorm to batch statistics), `variables`, `trainable_variables` and
`regularization_losses`.

Input everywhere: float32 RGB images [batch, H, W, 3] with pixel values in
[0, 255] (an 8-bit image cast to float, no other preprocessing).  The graph
scales them to [0, 1], converts to grey for networks trained on one channel
(ITU-R 601 luma, `tf.image.rgb_to_grayscale`) and normalises with the training
data's mean and std, exactly as the training pipeline did.  Assets:
genotype.json, class_names.txt (one name per line, in class-id order) and
preprocessing.json (the numbers above).
"""

import json
import os
import shutil
import tempfile
import uuid

import tensorflow as tf

from keras_darts.errors import ConfigError
from keras_darts.infra import fileio

PIXEL_MAX = 255.0  # Inputs are raw 8-bit pixel values as float32.
CLASSIFIER_DIR = "classifier"
FEATURES_DIR = "feature_extractor"


def check_export_dir(export_dir):
    """Raises ConfigError unless `export_dir` is new or an empty directory."""
    if fileio.exists(export_dir) and not fileio.is_empty_dir(export_dir):
        raise ConfigError(f"--export_dir {export_dir} already exists and is not an empty "
                          "directory; choose a new one")


class _ReusableModule(tf.Module):
    """One exported network: TF Hub's reusable-SavedModel attributes and a signature.

    tf.Module derives `variables` and `trainable_variables` from its attributes;
    the convention needs them as saved lists instead, so the class attributes
    below shadow tf.Module's properties and __init__ sets plain (tracked) lists.
    """

    variables = None
    trainable_variables = None

    def __init__(self, forward, outputs, variables, trainable_variables, image_shape,
                 weight_decay, assets):
        """forward(images, training) -> tensor; `outputs(tensor)` -> the signature's dict."""
        super().__init__()
        self.variables = list(variables)
        self.trainable_variables = list(trainable_variables)
        spec = tf.TensorSpec([None, *image_shape[:2], 3], tf.float32, name="images")
        self.__call__ = tf.function(forward)
        for training in (False, True):  # `training` is a Python bool: one trace each.
            self.__call__.get_concrete_function(spec, training)
        self.serving_default = tf.function(lambda images: outputs(forward(images, False)),
                                           input_signature=[spec])
        # The recipe's coupled weight decay (grad += wd * w) as the loss it is the gradient of.
        weights = self.trainable_variables
        self.regularization_losses = [tf.function(
            lambda: 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(w)) for w in weights]),
            input_signature=[])]
        for name, path in assets.items():
            setattr(self, name, tf.saved_model.Asset(path))

    def save(self, path):
        tf.saved_model.save(self, path, signatures={"serving_default": self.serving_default})


def _preprocess(images, info):
    """Raw RGB pixels [0, 255] -> what the network was trained on.  A wrong image
    size fails here, naming both shapes (signatures do not check sizes)."""
    height, width = info.image_shape[:2]
    x = tf.ensure_shape(images, [None, height, width, 3], name="images") / PIXEL_MAX
    if info.image_shape[-1] == 1:
        x = tf.image.rgb_to_grayscale(x)
    return (x - tf.constant(info.mean, tf.float32)) / tf.constant(info.std, tf.float32)


def preprocessing_description(info):
    return {"input": "float32 RGB images [batch, height, width, 3], pixel values in [0, 255]",
            "height": info.image_shape[0], "width": info.image_shape[1],
            "steps": ["divide by 255"]
            + (["RGB -> grey (ITU-R 601 luma)"] if info.image_shape[-1] == 1 else [])
            + ["subtract mean, divide by std (per channel)"],
            "mean": list(info.mean), "std": list(info.std)}


def _tf_variables(variables):
    return [getattr(v, "value", v) for v in variables]


def export_network(network, info, genotype, weight_decay, export_dir):
    """Writes classifier/ and feature_extractor/ SavedModels of `network` to `export_dir`.

    network: a trained `eval_net.EvalNetwork` (built outside any distribution
      strategy); info: the `data.DatasetInfo` it was trained on; weight_decay:
      of the recipe, for `regularization_losses`.
    The directory appears only when both are complete: everything is written to
    a temporary sibling first, then renamed.
    """
    check_export_dir(export_dir)
    export_dir = fileio.absolute(export_dir)  # Any filesystem TF supports (fileio).
    tmp = os.path.join(fileio.dirname(export_dir),
                       f".{os.path.basename(export_dir)}.tmp-{uuid.uuid4().hex[:12]}")
    fileio.makedirs(tmp)
    asset_dir = tempfile.mkdtemp()  # Local scratch, copied into each SavedModel's assets/.
    try:
        assets = _write_assets(asset_dir, info, genotype)
        _save_modules(network, info, weight_decay, assets, tmp)
        fileio.rmtree(export_dir)  # Empty if it exists (checked above): free the name.
        fileio.move_tree(tmp, export_dir)
    except BaseException:
        fileio.rmtree(tmp)
        raise
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)


def _write_assets(asset_dir, info, genotype):
    files = {"genotype_file": ("genotype.json", genotype.to_json()),
             "class_names_file": ("class_names.txt", "".join(f"{n}\n" for n in info.class_names)),
             "preprocessing_file": ("preprocessing.json",
                                    json.dumps(preprocessing_description(info), indent=1))}
    paths = {}
    for attribute, (name, text) in files.items():
        paths[attribute] = os.path.join(asset_dir, name)
        with open(paths[attribute], "w", encoding="utf-8") as f:
            f.write(text)
    return paths


def _save_modules(network, info, weight_decay, assets, out_dir):
    training_only = {id(network.drop_path_prob), id(network.drop_path_seed)}
    if network.aux_head is not None:
        training_only |= {id(v) for v in network.aux_head.variables}
    classifier_ids = {id(v) for v in network.classifier.variables}

    def pick(variables, exclude):
        return _tf_variables([v for v in variables if id(v) not in exclude])

    def classify(images, training=False):
        return network.classifier(network.features(_preprocess(images, info), training))

    def features(images, training=False):
        return network.features(_preprocess(images, info), training)

    _ReusableModule(
        classify, lambda logits: {"logits": logits, "probabilities": tf.nn.softmax(logits)},
        pick(network.variables, training_only), pick(network.trainable_variables, training_only),
        info.image_shape, weight_decay, assets,
    ).save(os.path.join(out_dir, CLASSIFIER_DIR))
    no_head = training_only | classifier_ids
    _ReusableModule(
        features, lambda f: {"features": f},
        pick(network.variables, no_head), pick(network.trainable_variables, no_head),
        info.image_shape, weight_decay, assets,
    ).save(os.path.join(out_dir, FEATURES_DIR))
