"""NAO's op family and evaluation networks, the analytic stand-alone parameter
count, NAO's text form of genotypes, and a NAO genotype trained and exported by
keras_darts.train (docs/evaluation.md#nao-networks)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import rand, run_module

from keras_darts import ops
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.evaluation import nao_network
from keras_darts.evaluation import networks as eval_net
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import nao_arch, published

TINY = dict(channels=4, num_layers=5, num_classes=3)  # N=1: reductions at cells 1 and 3.


def _arch(name):
    return nao_arch.from_genotype(published.REGISTRY[name].genotype)


def _random_archs(n, seed=0):
    return list(nao_arch.random_pool(np.random.default_rng(seed), n))


# ---------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------

def test_nao_ops_are_darts_layers_without_pool_bn_or_identity_relu():
    assert ops.op_set("nao") == nao_arch.OPS and ops.op_set_family("nao") == "nao"
    reduce_id = ops.make_op("identity", 4, 2, affine=True, family="nao")
    assert isinstance(reduce_id, ops.NaoFactorizedReduce) and not reduce_id.starts_with_relu
    assert ops.make_op("identity", 4, 1, affine=True, family="nao").is_identity
    for pool in ("avg_pool_3x3", "max_pool_3x3"):  # No BN, even in a supernet (affine=False).
        assert not ops.make_op(pool, 4, 1, affine=False, family="nao").variables
    sep = ops.make_op("sep_conv_5x5", 4, 2, affine=True, family="nao")
    assert isinstance(sep, ops.SepConv) and sep.starts_with_relu
    # NAO's FactorizedReduce runs on the state as it is: negative inputs matter.
    x = tf.constant(rand(2, 8, 8, 4))
    assert not np.allclose(reduce_id(x).numpy(), reduce_id(tf.nn.relu(x)).numpy())


def _second_cell(arch):
    """Cell 1 (a reduction at TINY's size) of `arch`'s network and random inputs for it."""
    cells = eval_net.build_network(nao_arch.to_genotype(arch), auxiliary=False,
                                   input_shape=(8, 8, 3), **TINY).eval_cells
    stem_channels = 3 * TINY["channels"]
    return (cells[1], tf.constant(rand(2, 8, 8, stem_channels)),
            tf.constant(rand(2, 8, 8, cells[0].out_channels)))


def test_reduction_identity_branch_gets_no_relu_in_the_cell():
    """A reduction node of two stride-2 identities on state 0 = 2 FactorizedReduce(state 0)."""
    arch = _random_archs(1)[0]
    # Reduction cell: n2 = id(s0) + id(s0), and no node reads n2 (a loose end).
    arch[20:] = [0, 4, 0, 4, 1, 0, 1, 1, 3, 2, 0, 0, 4, 3, 1, 0, 5, 0, 3, 1]
    cell, s0, s1 = _second_cell(arch)
    assert cell.reduction and cell.pairs[:2] == (("identity", 0), ("identity", 0))
    state0 = cell.preprocess0(tf.nn.relu(s0))
    node = cell.cell_ops[0](state0) + cell.cell_ops[1](state0)
    assert cell.concat == (2, 6)
    got = cell(s0, s1)[..., :cell.channels]
    np.testing.assert_allclose(got.numpy(), node.numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------

def test_published_nao_parameter_counts():
    """Exact integers of the layer shapes; the spec's derived figures, to +-0.005M:
    NAONet-V2 4.39M at N=6 C=36, 0.80M at the search size N=3 C=20, 7.03M on
    ImageNet (N=4, C=52, DARTS's stems); NAONet-B 2.92M at N=6 C=36.  (Built at
    paper size by tests/evaluation/test_networks.py; here the analytic count.)"""
    v2, b = _arch("NAONet_V2"), _arch("NAONet_B")
    count = nao_network.standalone_param_count
    assert count(v2, channels=36, cells_per_stage=6) == 4_387_654
    assert count(v2) == 800_830
    assert count(b, channels=36, cells_per_stage=6) == 2_921_302
    for name, setting, spec_millions in [("NAONet_V2", "cifar10_nao", 4.39),
                                         ("NAONet_V2", "cifar10_nao_search", 0.80),
                                         ("NAONet_V2", "imagenet_nao", 7.03),
                                         ("NAONet_B", "cifar10_nao", 2.92)]:
        params = published.REGISTRY[name].param_counts[setting][0]
        assert abs(params / 1e6 - spec_millions) <= 0.005, (name, setting)
    assert published.REGISTRY["NAONet_V2"].param_counts["cifar10_nao"][0] == 4_387_654


def test_analytic_count_equals_the_built_network():
    """standalone_param_count == trainable weights of the built network without its
    auxiliary head, for random archs and the published cells at the search size."""
    cases = [(arch, 4, 1) for arch in _random_archs(5)]
    cases += [(_arch(name), 20, 3) for name in ("NAONet_V2", "NAONet_B")]
    for arch, channels, n in cases:
        net = eval_net.build_network(nao_arch.to_genotype(arch), channels=channels,
                                     num_layers=nao_network.num_layers(n), num_classes=10)
        assert isinstance(net, nao_network.NaoNetworkCIFAR)
        assert nao_network.standalone_param_count(arch, channels, n) == \
            net.count_weight_params()
    assert nao_network.standalone_param_count(cases[0][0], 4, 1, num_classes=3,
                                              image_channels=1) < \
        nao_network.standalone_param_count(cases[0][0], 4, 1)


def test_inputs_are_calibrated_only_when_needed():
    """A normal cell whose only loose end is its last node outputs C channels, so the
    next normal cell takes that input as it is (no 1x1 conv)."""
    chain = [0, 0, 1, 0] + sum(([i, 0, i, 0] for i in range(2, 6)), [])
    arch = np.array(chain + list(_random_archs(1)[0][20:]), np.int32)
    net = eval_net.build_network(nao_arch.to_genotype(arch), channels=4,
                                 num_layers=nao_network.num_layers(2), auxiliary=False,
                                 input_shape=(8, 8, 3))
    cells = net.eval_cells  # Reductions at 2 and 5.
    assert cells[0].out_channels == 4
    assert cells[1].preprocess1 is None and cells[1].preprocess0 is not None  # 12 stem ch.
    assert isinstance(cells[3].preprocess0, ops.FactorizedReduce)  # After a reduction.
    assert nao_network.standalone_param_count(arch, 4, 2) == net.count_weight_params()


# ---------------------------------------------------------------------------
# Forward
# ---------------------------------------------------------------------------

def _loose_input_arch(state):
    """Random, but the reduction cell's node 0 reads only cell input 1 - state, so
    cell input `state` is a loose end (halved before the concat)."""
    arch = _random_archs(1, seed=state + 7)[0]
    arch[20:24] = [1 - state, 4, 1 - state, 0]
    for node in range(1, nao_arch.NUM_NODES):  # Later nodes read the other input or nodes.
        for slot in (0, 2):
            position = 20 + 4 * node + slot
            if arch[position] == state:
                arch[position] = 1 - state
    return arch


@pytest.mark.parametrize("arch", _random_archs(2) + [_loose_input_arch(0), _loose_input_arch(1)],
                         ids=["random0", "random1", "loose_input0", "loose_input1"])
def test_forward_shapes(arch):
    net = eval_net.build_network(nao_arch.to_genotype(arch), input_shape=(32, 32, 3), **TINY)
    images = tf.constant(rand(2, 32, 32, 3))
    assert net(images).shape == (2, 3)
    logits, aux = net(images, training=True)
    assert logits.shape == aux.shape == (2, 3)
    assert net.features(images).shape == (2, net.classifier.in_features)
    for cell in net.eval_cells:
        assert cell.reduced_inputs == tuple(i for i in cell.concat if cell.reduction and i < 2)
    reduce_loose = nao_arch.loose_ends(nao_arch.cell_of(arch, "reduce"))
    assert net.eval_cells[1].reduced_inputs == tuple(i for i in reduce_loose if i < 2)


def test_loose_input_of_a_reduction_cell_is_halved():
    for state in (0, 1):
        arch = _loose_input_arch(state)
        assert state in nao_arch.loose_ends(nao_arch.cell_of(arch, "reduce"))
        cell, s0, s1 = _second_cell(arch)
        assert cell.reduced_inputs == (state,)
        out = cell(s0, s1)
        assert out.shape == (2, 4, 4, cell.out_channels)


def test_dropout_is_training_only():
    arch = _random_archs(1)[0]
    net = eval_net.build_network(nao_arch.to_genotype(arch), auxiliary=False,
                                 input_shape=(8, 8, 3), dropout_rate=0.9, **TINY)
    images = tf.constant(rand(4, 8, 8, 3))
    np.testing.assert_allclose(net(images).numpy(), net(images).numpy())
    assert not np.allclose(net(images, training=True).numpy(),
                           net(images, training=True).numpy())
    assert net.get_config()["dropout_rate"] == 0.9
    with pytest.raises(ConfigError, match="dropout rate"):
        eval_net.build_network(nao_arch.to_genotype(arch), dropout_rate=1.0, **TINY)


# ---------------------------------------------------------------------------
# Which network a genotype builds
# ---------------------------------------------------------------------------

def test_build_network_picks_the_op_familys_network():
    assert type(eval_net.build_network("NAONet_V2", auxiliary=False, **TINY)) is \
        nao_network.NaoNetworkCIFAR
    imagenet = eval_net.build_network("NAONet_B", kind="imagenet", auxiliary=False,
                                      input_shape=(64, 64, 3), **TINY)
    assert type(imagenet) is nao_network.NaoNetworkImageNet
    assert isinstance(imagenet.eval_cells[0], nao_network.NaoCell)
    assert type(eval_net.build_network("DARTS_V2", auxiliary=False, **TINY)) is \
        eval_net.NetworkCIFAR
    with pytest.raises(ConfigError, match="unknown network kind 'mnist'"):
        eval_net.build_network("NAONet_V2", kind="mnist")
    with pytest.raises(ValueError, match="already registered"):
        eval_net.register_networks("nao", {"cifar": nao_network.NaoNetworkCIFAR})
    # A "nao" genotype outside NAO's space (a concat that is not the loose ends).
    data = {**published.REGISTRY["NAONet_V2"].genotype.to_json_dict(), "normal_concat": [6]}
    with pytest.raises(GenotypeError, match="is not the cell's loose ends"):
        eval_net.build_network(data, **TINY)


def test_config_round_trip():
    net = eval_net.build_network("NAONet_B", auxiliary=False, input_shape=(8, 8, 3), **TINY)
    clone = nao_network.NaoNetworkCIFAR.from_config(net.get_config())
    assert clone.genotype == net.genotype and clone.genotype.op_family == "nao"
    assert clone.count_weight_params() == net.count_weight_params()


# ---------------------------------------------------------------------------
# NAO's text form
# ---------------------------------------------------------------------------

def test_forty_integer_text_files_load_as_nao_genotypes(tmp_path):
    v2 = published.REGISTRY["NAONet_V2"].genotype
    path = tmp_path / "arch.txt"
    genotype_lib.save_nao_text(v2, str(path))
    assert path.read_text().count("\n") == 1 and len(path.read_text().split()) == 40
    assert genotype_lib.load(str(path)) == v2
    assert genotype_lib.load_genotype(str(path)) == v2
    # Commas and line breaks, e.g. NAO's two cells on two lines.
    text = nao_arch.to_text(nao_arch.from_genotype(v2)).split()
    (tmp_path / "two_lines").write_text(", ".join(text[:20]) + "\n" + " ".join(text[20:]))
    assert genotype_lib.load(str(tmp_path / "two_lines")) == v2
    with pytest.raises(GenotypeError, match="op family 'darts' is not NAO's"):
        genotype_lib.save_nao_text(genotype_lib.DARTS_V2, str(tmp_path / "darts.txt"))
    # JSON files load as before, a NAO genotype's JSON included.
    genotype_lib.save(v2, str(tmp_path / "nao.json"))
    assert json.loads((tmp_path / "nao.json").read_text())["op_family"] == "nao"
    assert genotype_lib.load(str(tmp_path / "nao.json")) == v2


@pytest.mark.parametrize("text, message", [
    ("1 1 0 1\n2 4 0 0", "expected 40 integers"),
    (" ".join(["3"] + ["0"] * 39), "position 0 (normal node 0 input) is 3; it must be 0..1"),
    ("-1 " + " ".join(["0"] * 39), "position 0 (normal node 0 input) is -1"),
    ("1 2 three", "not valid JSON"),
])
def test_bad_text_is_a_one_line_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text + "\n")
    with pytest.raises(GenotypeError) as err:
        genotype_lib.load_genotype(str(path))
    assert message in str(err.value) and "bad.txt" in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------
# Training and export through keras_darts.train
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_nao_genotype_trains_and_exports_with_the_cli(tmp_path):
    """keras_darts.train --genotype=NAONet_V2 at a tiny size: results, genotype.json
    (op family "nao"), and a SavedModel that serves."""
    out, export = tmp_path / "run", tmp_path / "export"
    result = run_module("keras_darts.train", "--genotype=NAONet_V2", "--dataset=digits",
                        "--image_size=32", "--channels=4", "--layers=5", "--batch_size=16",
                        "--steps_per_epoch=2", "--eval_batch_size=360", "--cutout=0",
                        "--epochs=1", "--log_every=1", f"--output_dir={out}",
                        f"--export_dir={export}")
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    arch = _arch("NAONet_V2")
    assert results["weight_params"] == nao_network.standalone_param_count(
        arch, channels=4, cells_per_stage=1, image_channels=1)
    assert results["weight_params"] < results["weight_params_with_auxiliary"]
    assert genotype_lib.load(str(out / "genotype.json")) == \
        published.REGISTRY["NAONet_V2"].genotype
    served = tf.saved_model.load(str(export / "classifier"))
    logits = served.signatures["serving_default"](images=tf.zeros((2, 32, 32, 3)))["logits"]
    assert logits.shape == (2, 10) and np.isfinite(logits.numpy()).all()
    assert os.path.isdir(export / "feature_extractor")
