"""The search-space description, its registry, the plans (forward contract) and
the mixing-rule registry."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts import ops
from keras_darts.errors import ConfigError, GenotypeError
from keras_darts.space import mixing, plans, search_space
from keras_darts.space.darts_cell import darts_cell
from keras_darts.space.genotype import Genotype
from keras_darts.space.search_space import SearchSpace
from keras_darts.space.supernet import SearchNetwork


def test_darts_space_is_registered_and_reads_the_op_set():
    space = search_space.get("darts", primitives="darts", num_nodes=4)
    assert "darts" in search_space.names()
    assert space.primitives == ops.op_set("darts")
    assert space.alpha_shape == (14, 8) and space.num_edges == 14
    assert space.rows_of_node(2) == [5, 6, 7, 8]
    assert space.multi_input_nodes() == {1: [2, 3, 4], 2: [5, 6, 7, 8],
                                         3: [9, 10, 11, 12, 13]}
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        search_space.get("nope")


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        search_space.register("darts")(darts_cell)


def test_concat_rules():
    pairs = [("a", 0), ("a", 1), ("a", 2), ("a", 0), ("a", 3), ("a", 2)]
    assert SearchSpace("x", ("a",), num_nodes=3).concat_of(pairs) == (2, 3, 4)
    loose = SearchSpace("x", ("a",), num_nodes=3, concat="loose_ends")
    assert loose.concat_of(pairs) == (4,)  # Nodes 2 and 3 feed later nodes.
    with pytest.raises(ValueError, match="concat must be one of"):
        SearchSpace("x", ("a",), concat="some")


def test_genotype_applies_the_concat_rule():
    space = SearchSpace("x", ("a", "b"), num_nodes=2, concat="loose_ends")
    genotype = space.genotype({"normal": [("a", 0), ("b", 1), ("a", 2), ("a", 0)],
                               "reduce": [("a", 0), ("b", 1), ("a", 0), ("a", 1)]})
    assert genotype.normal_concat == (3,) and genotype.reduce_concat == (2, 3)


def test_derive_cell_is_higher_is_better_with_never_chosen_and_unusable_edges():
    space = darts_cell(("none", "a", "b"), num_nodes=2)
    scores = np.array([[0.9, 0.1, 0.2],    # node 0 <- 0: `none` is never chosen -> b
                       [0.5, 0.3, 0.3],    # node 0 <- 1: tie -> the first op, a
                       [0.0, -np.inf, -np.inf],  # node 1 <- 0: no choosable op: never kept
                       [0.0, 0.2, 0.1],    # node 1 <- 1
                       [0.0, 0.1, 0.4]])   # node 1 <- 2: strongest first
    assert space.derive_cell(scores) == [("a", 1), ("b", 0), ("b", 2), ("a", 1)]
    scores[3] = -np.inf
    with pytest.raises(GenotypeError, match="node 1 has 1 incoming edge"):
        space.derive_cell(scores)
    with pytest.raises(ValueError, match="scores of shape"):
        space.derive_cell(scores[:4])


def test_derive_cell_with_every_op_a_candidate():
    space = darts_cell(("none", "a"), num_nodes=1)
    assert space.derive_cell([[0.9, 0.1], [0.8, 0.0]],
                             candidates=range(2)) == [("none", 0), ("none", 1)]


def _net():
    return SearchNetwork(10, channels=4, num_layers=3, num_nodes=2, input_shape=(8, 8, 3))


def test_network_reads_the_space():
    space = darts_cell("darts_pt", 2)
    net = SearchNetwork(10, channels=4, num_layers=3, space=space, input_shape=(8, 8, 3))
    assert net.space is space and net.primitives == space.primitives
    assert set(net.alphas) == {"normal", "reduce"}
    assert [tuple(a.shape) for a in net.arch_variables] == [space.alpha_shape] * 2
    assert [c.cell_type for c in net.search_cells] == ["normal", "reduce", "reduce"]


def test_plans_cross_a_traced_function_without_retracing():
    """evaluate_plan traces once per trace_key: new weights or another Mix of the
    same cell types reuse the trace; a genotype is its own trace."""
    from keras_darts.methods.bilevel import BilevelSearch

    net = _net()
    search = BilevelSearch(net, tf.distribute.get_strategy(), 4)
    rng = np.random.default_rng(0)
    batch = (tf.constant(rng.standard_normal((4, 8, 8, 3)), tf.float32),
             tf.constant(rng.integers(0, 10, 4), tf.int32))
    probs = net.arch_probabilities()
    first = search.evaluate_plan(batch, plans.Mix(probs))
    masked = {cell: p.copy() for cell, p in probs.items()}
    masked["normal"][0] = 0.0
    second = search.evaluate_plan(batch, plans.Mix(masked))
    assert len(search._evaluate_plan) == 1
    assert float(first[0]) != float(second[0])
    genotype = net.space.derive_genotype(probs)
    search.evaluate_plan(batch, plans.Discrete(genotype))
    assert len(search._evaluate_plan) == 2
    mix = next(iter(search._evaluate_plan.values()))
    assert mix.experimental_get_tracing_count() == 1


def test_discrete_plan_refuses_another_concat():
    net = _net()
    genotype = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)] * 2,
                        normal_concat=[3], reduce=[("skip_connect", 0)] * 4,
                        reduce_concat=[2, 3])
    with pytest.raises(GenotypeError, match="concat"):
        net(tf.zeros((1, 8, 8, 3)), plan=plans.Discrete(genotype))


def test_mixing_rules():
    assert "softmax" in mixing.names()
    alpha = tf.constant([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(mixing.get("softmax")(alpha), [[0.25, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(mixing.softmax(alpha, temperature=tf.constant(2.0)),
                               tf.nn.softmax(alpha / 2.0), rtol=1e-6)
    with pytest.raises(ConfigError, match="unknown mixing rule"):
        mixing.get("max_w_typo")
    with pytest.raises(ValueError, match="already registered"):
        mixing.register("softmax")(mixing.softmax)
