"""Export of a trained network (SavedModels without keras_darts), the reusable
feature extractor fine-tuned inside a Keras 3 model, and refused exports."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_module

from keras_darts import data as data_lib
from keras_darts.config import TrainConfig
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.evaluation import networks as eval_net
from keras_darts.runs.train_run import export_run, restore_run, run_train
from keras_darts.serving import savedmodel as serving
from keras_darts.serving.reuse import load_layer
from keras_darts.space import genotype as genotype_lib

# 32x32 digits: one channel (the export converts RGB to grey) and an auxiliary head
# in the checkpoint (which the export leaves out).
RUN = dict(genotype="DARTS_V2", channels=4, layers=3, image_size=32, auxiliary=True,
           batch_size=16, steps_per_epoch=2, eval_batch_size=360, epochs=1, cutout=0,
           log_every=0, weight_decay=3e-4)
LUMA = np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601, as tf.image.rgb_to_grayscale.

# Runs in a fresh interpreter where importing keras_darts fails (it may be installed,
# e.g. by `pip install -e .` in CI: the entry in sys.modules blocks it).
RELOAD_SCRIPT = r"""
import json, sys
sys.modules["keras_darts"] = None
import numpy as np, tensorflow as tf
try:
    import keras_darts  # noqa: F401
    raise AssertionError("keras_darts must not be importable")
except ImportError:
    pass
export_dir, batch_path, out_path = sys.argv[1:]
images = tf.constant(np.load(batch_path))
classifier = tf.saved_model.load(export_dir + "/classifier")
features = tf.saved_model.load(export_dir + "/feature_extractor")
serve = classifier.signatures["serving_default"]
out = {k: v.numpy() for k, v in serve(images=images).items()}
out["features"] = features.signatures["serving_default"](images=images)["features"].numpy()
out["call_logits"] = classifier(images, False).numpy()
out["regularization"] = np.array(classifier.regularization_losses[0]().numpy())
errors = {}
bad_inputs = {"shape": tf.zeros((1, 16, 16, 3)), "dtype": tf.zeros((1, 32, 32, 3), tf.int32)}
for name, bad in bad_inputs.items():
    try:
        serve(images=bad)
        errors[name] = "accepted"
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as e:
        errors[name] = str(e)
np.savez(out_path, **out)
assets = {a: open(getattr(classifier, a).asset_path.numpy().decode()).read()
          for a in ("genotype_file", "class_names_file", "preprocessing_file")}
print("RELOAD " + json.dumps({"errors": errors, "assets": assets,
                              "keras_darts_imported": sys.modules.get("keras_darts") is not None,
                              "counts": [len(classifier.variables),
                                         len(classifier.trainable_variables),
                                         len(features.trainable_variables)]}))
"""


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_serving")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run, exported with the CLI: (run dir, export dir, reference Keras network)."""
    root = tmp_path_factory.mktemp("serving")
    run_dir, export_dir = str(root / "run"), str(root / "export")
    run_train(TrainConfig(output_dir=run_dir, **RUN))
    result = run_module("keras_darts.export", f"--checkpoint={run_dir}",
                        f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = restore_run(run_dir)
    return run_dir, export_dir, run.network, run.info


def _pixels(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)


def _preprocess(pixels, info):
    grey = (pixels / 255.0) @ LUMA
    return ((grey[..., None] - info.mean[0]) / info.std[0]).astype(np.float32)


def test_reload_without_keras_darts_gives_the_keras_models_predictions(trained, tmp_path):
    _, export_dir, network, info = trained
    pixels = _pixels(5)
    np.save(tmp_path / "batch.npy", pixels)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, export_dir,
                           str(tmp_path / "batch.npy"), str(tmp_path / "out.npz")],
                          cwd=tmp_path, env=dict(env, TF_CPP_MIN_LOG_LEVEL="2"),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(next(line for line in proc.stdout.splitlines()
                             if line.startswith("RELOAD "))[len("RELOAD "):])
    assert report["keras_darts_imported"] is False
    out = np.load(tmp_path / "out.npz")

    images = _preprocess(pixels, info)
    logits = network(images, training=False).numpy()
    np.testing.assert_allclose(out["logits"], logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["call_logits"], logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-5)
    np.testing.assert_allclose(out["features"], network.features(images).numpy(), atol=1e-5)
    # regularization_losses: the recipe's coupled decay as 0.5 * wd * sum(w^2), aux head excluded.
    aux = {id(v) for v in network.aux_head.variables}
    weights = [v.numpy() for v in network.trainable_variables if id(v) not in aux]
    expected = 0.5 * 3e-4 * sum(float(np.sum(np.square(w.astype(np.float64)))) for w in weights)
    assert float(out["regularization"]) == pytest.approx(expected, rel=1e-5)
    # Variables: every weight and BN statistic of stem, cells (and classifier), nothing else.
    classifier_vars, classifier_trainable, features_trainable = report["counts"]
    assert classifier_trainable == len(weights)
    # Without the auxiliary head and drop path's probability and seed.
    assert classifier_vars == len(network.variables) - len(aux) - 2
    assert features_trainable == classifier_trainable - 2  # Without the classifier's kernel, bias.

    shape_error, dtype_error = report["errors"]["shape"], report["errors"]["dtype"]
    assert "[1,16,16,3] is not compatible with expected shape [?,32,32,3]" in shape_error
    assert "expected to be a float tensor but is a int32 tensor" in dtype_error
    assets = report["assets"]
    assert genotype_lib.from_json_dict(json.loads(assets["genotype_file"])) == \
        genotype_lib.DARTS_V2
    assert assets["class_names_file"].split() == [str(d) for d in range(10)]
    preprocessing = json.loads(assets["preprocessing_file"])
    assert preprocessing["mean"] == list(info.mean) and preprocessing["height"] == 32


def test_restored_network_reproduces_the_runs_test_accuracy(trained):
    """The restore that export uses brings back every weight: the test accuracy the
    training process measured in memory is reproduced exactly."""
    run_dir, _, network, info = trained
    results = json.load(open(os.path.join(run_dir, "results.json")))
    data = data_lib.load_train_data("digits", RUN["batch_size"], image_size=32,
                                    eval_batch_size=360)
    assert data.info == info
    images, labels = next(iter(data.test))
    logits = network(images, training=False)
    correct = np.sum(np.argmax(logits.numpy(), -1) == labels.numpy())
    assert correct / len(labels) == results["test_accuracy"]
    loss = eval_net.smoothed_cross_entropy(labels, logits).numpy().mean()
    assert loss == pytest.approx(results["test_loss"], rel=1e-5)


def test_saved_model_cli_lists_the_signature(trained):
    export_dir = trained[1]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([cli, "show", "--dir", os.path.join(export_dir, "classifier"),
                           "--all"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    assert "signature_def['serving_default']" in text
    for needed in ("inputs['images']", "shape: (-1, 32, 32, 3)", "DT_FLOAT",
                   "outputs['logits']", "outputs['probabilities']", "shape: (-1, 10)"):
        assert needed in text, needed


def test_export_refuses_a_checkpoint_that_does_not_match(trained, tmp_path):
    run_dir = trained[0]
    out = tmp_path / "export"
    with pytest.raises(GenotypeError, match="trained on a different genotype"):
        export_run(run_dir, str(out), genotype="DARTS_V1")
    # Same ops at the same places, one input index changed: only the stored genotype tells.
    swapped = genotype_lib.DARTS_V2.to_json_dict()
    swapped["normal"][7] = ["dil_conv_3x3", 3]
    swapped_path = tmp_path / "swapped.json"
    swapped_path.write_text(json.dumps(swapped))
    with pytest.raises(GenotypeError, match="trained on a different genotype"):
        export_run(run_dir, str(out), genotype=str(swapped_path))
    # A config that no longer describes the checkpoint's network.
    edited = tmp_path / "edited_run"
    shutil.copytree(run_dir, edited)
    config = json.load(open(edited / "config.json"))
    config["channels"] = 6
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(GenotypeError, match="does not match the network"):
        export_run(str(edited), str(out))
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]  # No half-written export.

    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not an empty directory"):
        export_run(run_dir, str(out))
    with pytest.raises(ConfigError, match="not a keras_darts.train output directory"):
        export_run(str(tmp_path), str(tmp_path / "other"))


def _tiny_task(n=32, classes=3):
    """RGB pixel images whose class is their brightness band (learnable in a few steps)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, n)
    base = (labels[:, None, None, None] + 0.5) * (255.0 / classes)
    images = np.clip(base + rng.normal(0, 20, (n, 32, 32, 3)), 0, 255).astype(np.float32)
    return images, labels


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_reused_feature_extractor_fine_tunes_in_a_keras_model(trained, optimizer):
    features = load_layer(os.path.join(trained[1], serving.FEATURES_DIR))
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(features(inputs)))  # 3 classes, not 10.
    opt = (keras.optimizers.SGD(0.05, momentum=0.9) if optimizer == "sgd"
           else keras.optimizers.Adam(3e-3))
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images, labels = _tiny_task()
    reloaded = features.module.trainable_variables
    before = [v.numpy().copy() for v in reloaded]
    stats_before = [v.numpy().copy() for v in features.module.variables if not v.trainable]
    losses = model.fit(images, labels, epochs=6, batch_size=32, verbose=0).history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    # Keras updated the very variables the reloaded functions read.
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, reloaded))
    stats_after = [v.numpy() for v in features.module.variables if not v.trainable]
    assert any(not np.array_equal(b, a) for b, a in zip(stats_before, stats_after))
    assert len(features.trainable_weights) == len(reloaded)


def test_frozen_feature_extractor_stays_unchanged(trained):
    features = load_layer(os.path.join(trained[1], serving.FEATURES_DIR), trainable=False)
    assert not features.trainable_weights
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(features(inputs)))
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [v.numpy().copy() for v in features.module.variables]
    model.fit(*_tiny_task(), epochs=2, batch_size=32, verbose=0)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, features.module.variables))
    assert len(model.trainable_weights) == 2  # The new head only.
    features.trainable = True  # Unfreezing brings every reloaded trainable variable back.
    assert len(features.trainable_weights) == len(features.module.trainable_variables)


def test_load_layer_bad_path(tmp_path):
    with pytest.raises(ConfigError, match="cannot load a SavedModel"):
        load_layer(str(tmp_path / "missing"))
