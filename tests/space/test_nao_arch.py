"""NAO's 40-integer architectures (keras_darts/space/nao_arch.py): round trips
through genotype, JSON, text and tokens, validation errors, constrained token
ranges, and the symmetric copy that builds the same network."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.errors import GenotypeError
from keras_darts.evaluation import networks as eval_net
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import nao_arch

NAONET_V2 = "1 1 0 1 2 4 0 0 0 0 2 1 0 0 0 2 0 3 0 0 0 2 0 2 2 2 1 0 0 0 0 1 0 0 0 3 0 0 0 1"


def _pool(n=20, seed=0):
    return nao_arch.random_pool(np.random.default_rng(seed), n)


def test_random_archs_are_valid_distinct_and_round_trip():
    pool = _pool()
    assert pool.shape == (20, nao_arch.ARCH_LENGTH)
    assert len({nao_arch.key(a) for a in pool}) == 20
    for arch in pool:
        genotype = nao_arch.to_genotype(arch)
        assert genotype.op_family == "nao" and genotype.num_nodes == nao_arch.NUM_NODES
        np.testing.assert_array_equal(nao_arch.from_genotype(genotype), arch)
        # Through the JSON every tool reads, and through NAO's text form.
        again = genotype_lib.from_json_dict(genotype.to_json_dict())
        assert again == genotype
        np.testing.assert_array_equal(nao_arch.parse_text(nao_arch.to_text(arch)), arch)
        np.testing.assert_array_equal(nao_arch.from_tokens(nao_arch.to_tokens(arch)), arch)
    more = nao_arch.random_pool(np.random.default_rng(1), 30, exclude=pool)
    assert not {nao_arch.key(a) for a in more} & {nao_arch.key(a) for a in pool}


def test_naonet_v2_genotype_is_the_specs_cell():
    genotype = nao_arch.to_genotype(nao_arch.parse_text(NAONET_V2))
    # normal: n2 = sep5(s1) + sep5(s0); n3 = id(n2) + sep3(s0); concat [3, 4, 5, 6].
    assert genotype.normal[:4] == (("sep_conv_5x5", 1), ("sep_conv_5x5", 0),
                                   ("identity", 2), ("sep_conv_3x3", 0))
    assert genotype.normal_concat == (3, 4, 5, 6) == genotype.reduce_concat
    # reduce: n2 = avg3(s0) + avg3(s0), both branches on one state.
    assert genotype.reduce[:2] == (("avg_pool_3x3", 0), ("avg_pool_3x3", 0))


def test_tokens_and_their_ranges():
    arch = nao_arch.parse_text(NAONET_V2)
    tokens = nao_arch.to_tokens(arch)
    assert tokens[:4].tolist() == [2, 8, 1, 8]  # Input 1 -> 2, op 1 -> 8, input 0 -> 1.
    assert tokens.min() >= 1 and tokens.max() < nao_arch.VOCAB_SIZE
    for position, token in enumerate(tokens):
        low, high = nao_arch.token_range(position)
        assert low <= token < high
    # Node 0 reads states 0..1 (tokens 1, 2), node 4 states 0..5; ops are tokens 7..11.
    assert nao_arch.token_range(0) == (1, 3) and nao_arch.token_range(16) == (1, 7)
    assert nao_arch.token_range(37) == (7, 12)
    with pytest.raises(GenotypeError, match="decoded tokens: position 0"):
        nao_arch.from_tokens(np.r_[[3], tokens[1:]])  # Input 2 at node 0.


@pytest.mark.parametrize("arch, message", [
    (list(range(39)), "expected 40 integers"),
    (np.zeros(40, np.float32), "expected 40 integers"),
    (np.r_[[2], np.zeros(39, int)], "position 0 (normal node 0 input) is 2; it must be 0..1"),
    (np.r_[np.zeros(21, int), [5], np.zeros(18, int)],
     "position 21 (reduce node 0 op) is 5; it must be 0..4"),
])
def test_bad_archs_name_the_position(arch, message):
    with pytest.raises(GenotypeError) as err:
        nao_arch.validate(arch)
    assert message in str(err.value)


def test_bad_text_is_refused():
    with pytest.raises(GenotypeError, match="expected 40 integers"):
        nao_arch.parse_text("1 2 x")
    with pytest.raises(GenotypeError, match="expected 40 integers"):
        nao_arch.parse_text(" ".join(["0"] * 41))
    assert nao_arch.parse_text(NAONET_V2.replace(" ", ", ")).tolist() == [
        int(v) for v in NAONET_V2.split()]


def test_genotypes_outside_the_space_are_refused():
    genotype = nao_arch.to_genotype(nao_arch.parse_text(NAONET_V2))
    data = genotype.to_json_dict()
    cases = [
        (genotype_lib.DARTS_V2, "op family 'darts' is not NAO's 'nao'"),
        (genotype_lib.from_json_dict({**data, "normal_concat": [4, 5, 6]}),
         "normal_concat [4, 5, 6] is not the cell's loose ends [3, 4, 5, 6]"),
        (genotype_lib.from_json_dict({**data, "reduce": data["reduce"][:8], "reduce_concat": [5],
                                      "normal": data["normal"][:8], "normal_concat": [5]}),
         "has 4 nodes"),
    ]
    for bad, message in cases:
        with pytest.raises(GenotypeError) as err:
            nao_arch.from_genotype(bad)
        assert message in str(err.value)


def test_loose_ends():
    # Every node reads the one before it: only the last node is loose.
    chain = [0, 0, 1, 0] + sum(([i, 0, i, 0] for i in range(2, 6)), [])
    assert nao_arch.loose_ends(chain) == (6,)
    arch = nao_arch.parse_text(NAONET_V2)
    assert nao_arch.loose_ends(nao_arch.cell_of(arch, "normal")) == (3, 4, 5, 6)


def _swappable_arch():
    """Random, except that node 1 of the normal and node 0 of the reduction cell
    have two different branches (so a swap reorders different layers)."""
    arch = nao_arch.random_arch(np.random.default_rng(3))
    arch[4:8] = [0, 0, 2, 2]            # normal n3 = sep3(s0) + avg3(n2)
    arch[20:24] = [0, 4, 1, 1]          # reduce n2 = identity(s0) (FactorizedReduce) + sep5(s1)
    return arch


def _copy_weights(source, target, swapped):
    """Copies `source`'s weights into `target`, whose cells have the two branches of
    node swapped[reduction] in the other order."""
    def copy(a, b):
        assert len(a.variables) == len(b.variables)
        for va, vb in zip(a.variables, b.variables):
            vb.assign(va)

    for a, b in ((source.stem, target.stem), (source.classifier, target.classifier)):
        copy(a, b)
    for ca, cb in zip(source.eval_cells, target.eval_cells):
        for la, lb in zip([ca.preprocess0, ca.preprocess1, *ca.input_reducers],
                          [cb.preprocess0, cb.preprocess1, *cb.input_reducers]):
            assert (la is None) == (lb is None)
            if la is not None:
                copy(la, lb)
        node = swapped[ca.reduction]
        order = list(range(len(ca.cell_ops)))
        order[2 * node], order[2 * node + 1] = order[2 * node + 1], order[2 * node]
        for k, j in enumerate(order):
            copy(ca.cell_ops[j], cb.cell_ops[k])


def test_symmetric_copy_is_the_same_network():
    """A node adds its branches, so swapping them (NAO's data augmentation) gives the
    same function: with the weights carried over, the same logits."""
    arch = _swappable_arch()
    swapped = nao_arch.swap_branches(arch, 1, 0)
    assert not np.array_equal(arch, swapped)
    np.testing.assert_array_equal(nao_arch.swap_branches(swapped, 1, 0), arch)
    copies = {nao_arch.key(nao_arch.symmetric_copy(arch, np.random.default_rng(s)))
              for s in range(10)}
    assert len(copies) > 1
    for copy in copies:  # Per node the same two (input, op) branches, maybe reordered.
        for a, b in zip(np.reshape(arch, (-1, 2, 2)), np.reshape(copy, (-1, 2, 2))):
            assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))

    tiny = dict(channels=4, num_layers=5, num_classes=3, auxiliary=False,
                input_shape=(8, 8, 3))
    net = eval_net.build_network(nao_arch.to_genotype(arch), **tiny)
    twin = eval_net.build_network(nao_arch.to_genotype(swapped), **tiny)
    assert twin.count_weight_params() == net.count_weight_params()
    _copy_weights(net, twin, swapped={False: 1, True: 0})
    images = tf.random.stateless_normal((2, 8, 8, 3), seed=[1, 2])
    np.testing.assert_allclose(twin(images).numpy(), net(images).numpy(), rtol=1e-5, atol=1e-5)
