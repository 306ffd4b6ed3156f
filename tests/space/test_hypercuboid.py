"""sharpDARTS's HyperCuboid: grid widths, alpha layout, the path (path.json),
the heaviest-path read-out, the grid supernet and the chain network
(docs/methods/hypercuboid.md)."""

import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.errors import GenotypeError
from keras_darts.evaluation import networks as eval_net
from keras_darts.evaluation.chain_network import ChainNetwork
from keras_darts.ops.sharp_ops import ResizablePool, SharpSepConv
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import hypercuboid, mixing, plans
from keras_darts.space.grid_network import GridNetwork
from keras_darts.space.hypercuboid import GRID_OPS, GridPath, GridSpace, GridStage

SPACE = GridSpace((4, 8), 1)  # 2 widths, 1 layer = 2 stages.


def test_grid_widths_follow_the_channels():
    assert hypercuboid.grid_widths(36) == (32, 64, 128, 256)
    assert hypercuboid.grid_widths(32) == (32, 64, 128, 256)
    assert hypercuboid.grid_widths(4, 3) == (4, 8, 16)
    with pytest.raises(ValueError):
        hypercuboid.grid_widths(0)


def test_alpha_rows_are_cuboids_in_stage_order():
    space = GridSpace(hypercuboid.grid_widths(36), 4)
    assert space.stages[:3] == ((0, 1), (0, 2), (1, 1))
    assert space.alpha_shape == (8, 32)  # The reference's [2, 4, 4, 4, 2] = 256 values.
    row = np.arange(32)
    cuboid = space.cuboid(row)
    assert cuboid.shape == (4, 4, 2) and cuboid[1, 2, 1] == 1 * 8 + 2 * 2 + 1


def _brute_force(cuboids, widths, stages):
    """The heaviest path by enumerating every (stem, (c_out, op) per stage)."""
    n, best = len(widths), None
    for stem in range(n):
        for choice in itertools.product(range(n), range(len(GRID_OPS)), repeat=len(stages)):
            total, c_in = 0.0, stem
            for s in range(len(stages)):
                c_out, op = choice[2 * s], choice[2 * s + 1]
                total += cuboids[s][c_in, c_out, op]
                c_in = c_out
            if best is None or total > best[0] + 1e-12:
                best = (total, stem, choice)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_longest_path_is_the_heaviest(seed):
    rng = np.random.default_rng(seed)
    widths, stages = (4, 8, 16), ((0, 1), (0, 2), (1, 1), (1, 2))
    cuboids = [rng.random((3, 3, 2)) for _ in stages]
    path = hypercuboid.longest_path(cuboids, widths, stages)
    total = sum(cuboids[s][widths.index(st.c_in), widths.index(st.c_out), GRID_OPS.index(st.op)]
                for s, st in enumerate(path.stages))
    best, stem, _ = _brute_force(cuboids, widths, stages)
    assert total == pytest.approx(best) and path.stem == widths[stem]


def test_derive_genotype_reads_the_softmax_rows():
    weights = np.full(SPACE.alpha_shape, 0.01)
    weights[0, SPACE.cuboid(np.arange(8)).tolist()[1][0][1]] = 0.9  # 8 -> 4, sep, stride 1.
    weights[1, SPACE.cuboid(np.arange(8)).tolist()[0][1][0]] = 0.9  # 4 -> 8, pool, stride 2.
    path = SPACE.derive_genotype({"grid": weights})
    assert path == GridPath(8, (GridStage(0, 1, 8, 4, "sharp_sep_conv"),
                                GridStage(0, 2, 4, 8, "resizable_pool")))


def test_path_json_round_trip_and_loading(tmp_path):
    path = hypercuboid.MULTI_CHANNEL_HANDMADE_PATH
    file = tmp_path / "path.json"
    hypercuboid.save(path, str(file))
    data = json.loads(file.read_text())
    assert data["kind"] == "hypercuboid_path" and data["stem"] == 32 and len(data["stages"]) == 8
    assert genotype_lib.load(str(file)) == path  # Wherever a genotype file is read.
    assert genotype_lib.load_genotype(str(file)) == path
    assert genotype_lib.load_genotype("MULTI_CHANNEL_MAX_W_PATH").stem == 256
    assert path.to_text().startswith("stem 32 | l0 s1 sharp_sep_conv 32->32 | l0 s2 "
                                     "resizable_pool 32->64")


def _data(**changes):
    data = hypercuboid.MULTI_CHANNEL_HANDMADE_PATH.to_json_dict()
    data.update(changes)
    return data


@pytest.mark.parametrize("data, message", [
    (_data(stem=0), "'stem' must be a positive width"),
    (_data(extra=1), "exactly the keys kind, stem, stages"),
    (_data(stages=_data()["stages"][:3]), "a stride-1 and a stride-2 stage per layer"),
    (_data(stages=[dict(s, op="conv") if i == 2 else s
                   for i, s in enumerate(_data()["stages"])]), "stage 2 has op 'conv'"),
    (_data(stages=[dict(s, c_in=16) if i == 1 else s
                   for i, s in enumerate(_data()["stages"])]),
     "stage 1 reads width 16 but the previous stage outputs 32"),
    (_data(stages=[dict(s, stride=2) if i == 0 else s
                   for i, s in enumerate(_data()["stages"])]), "stage 0 must be layer 0 stride 1"),
    (_data(stages=[{"layer": 0}] + _data()["stages"][1:]), "stage 0 must have exactly the keys"),
])
def test_bad_path_json_is_a_clear_error(data, message):
    with pytest.raises(GenotypeError, match=message):
        hypercuboid.from_json_dict(data)


def test_published_paths_match_the_reference():
    max_w = hypercuboid.MULTI_CHANNEL_MAX_W_PATH
    assert [(s.op[:4], s.c_in, s.c_out) for s in max_w.stages] == [
        ("resi", 256, 128), ("resi", 128, 256), ("resi", 256, 32), ("resi", 32, 256),
        ("shar", 256, 256), ("resi", 256, 256), ("resi", 256, 256), ("resi", 256, 256)]
    handmade = hypercuboid.MULTI_CHANNEL_HANDMADE_PATH
    assert [s.c_out for s in handmade.stages] == [32, 64, 64, 128, 128, 256, 256, 256]


# -- the grid supernet ------------------------------------------------------------

def _grid(mixing_rule="softmax", min_weight=0.0):
    return GridNetwork(3, SPACE, input_shape=(8, 8, 1), mixing=mixing_rule,
                       min_weight=min_weight)


def test_grid_ops_map_every_width_to_every_width():
    net = _grid()
    for stage, (_, stride) in enumerate(SPACE.stages):
        for i, c_in in enumerate(SPACE.widths):
            for j, c_out in enumerate(SPACE.widths):
                pool, sep = net.stage_ops[stage][i][j]
                assert isinstance(pool, ResizablePool) and isinstance(sep, SharpSepConv)
                assert (pool.in_channels, pool.channels, pool.stride) == (c_in, c_out, stride)
                assert (pool.resize is None) == (c_in == c_out)
                assert (sep.in_channels, sep.mid_channels, sep.channels) == (c_in, c_out, c_out)
    assert [head.in_channels for head in net.heads] == list(SPACE.widths)
    assert net.classifier.in_features == 768
    assert net(tf.zeros((2, 8, 8, 1)), training=True).shape == (2, 3)


def test_max_w_takes_the_max_over_the_whole_cuboid():
    net = _grid("max_w")
    alpha = np.zeros(SPACE.alpha_shape, np.float32)
    alpha[0, 3] = 2.0
    net.alphas["grid"].assign(alpha)
    coefs = plans.Mix().weights_by_type(net)["grid"].numpy()
    w = tf.nn.softmax(alpha, axis=-1).numpy()
    assert coefs[0, 3] == pytest.approx(1.0) and np.allclose(coefs, 1 - w.max(-1, keepdims=True)
                                                             + w)
    assert net.mixing_rule is mixing.max_w


def test_ops_below_min_weight_are_skipped():
    """Ops whose coefficient is <= min_weight contribute nothing: the output
    equals that of coefficients with those entries set to zero."""
    images = tf.random.normal((2, 8, 8, 1), seed=1)
    net = _grid(min_weight=0.05)
    weights = np.full(SPACE.alpha_shape, 0.01, np.float32)
    weights[:, ::3] = 0.2
    skipped = net(images, plan=plans.Mix({"grid": weights}))
    zeroed = np.where(weights > 0.05, weights, 0.0).astype(np.float32)
    dense = _grid(min_weight=0.0)
    dense.set_weights(net.get_weights())
    assert np.allclose(skipped, dense(images, plan=plans.Mix({"grid": zeroed})), atol=1e-5)
    assert not np.allclose(skipped, dense(images, plan=plans.Mix({"grid": weights})),
                           atol=1e-5)


# -- the chain network ----------------------------------------------------------------

def _chain_params(path, in_channels, classes):
    """Weights of the chain by formula (affine BN: 2 per channel)."""
    def sep(c_in, c_mid, c_out):
        return 9 * c_in + c_in * c_mid + 2 * c_mid + 9 * c_mid + c_mid * c_out + 2 * c_out

    total = 9 * in_channels * path.stem + 2 * path.stem
    for s in path.stages:
        if s.op == "sharp_sep_conv":
            total += sep(s.c_in, s.c_out, s.c_out)
        elif s.c_in != s.c_out:
            total += s.c_in * s.c_out + 2 * s.c_out
    return total + sep(path.out_channels, 768, 768) + 768 * classes + classes


@pytest.mark.parametrize("name", sorted(hypercuboid.PUBLISHED))
def test_chain_network_of_a_published_path(name):
    path = hypercuboid.PUBLISHED[name]
    net = eval_net.build_network(path, num_classes=10, input_shape=(32, 32, 3))
    assert isinstance(net, ChainNetwork)
    assert net.count_weight_params() == _chain_params(path, 3, 10)
    assert net.count_weight_params(include_auxiliary=True) == net.count_weight_params()


def test_chain_network_runs_and_round_trips_its_config():
    path = GridPath(4, (GridStage(0, 1, 4, 8, "resizable_pool"),
                        GridStage(0, 2, 8, 4, "sharp_sep_conv")))
    net = ChainNetwork(path, num_classes=3, input_shape=(8, 8, 1))
    logits = net(tf.zeros((2, 8, 8, 1)), training=True)
    assert logits.shape == (2, 3) and net.features(tf.zeros((2, 8, 8, 1))).shape == (2, 768)
    again = ChainNetwork.from_config(net.get_config())
    assert again.genotype == path and again.count_weight_params() == net.count_weight_params()
    with pytest.raises(ValueError, match="no drop path"):
        net.set_drop_path_prob(0.1)
