"""NAO-V2's weight-sharing supernet and its single-path step
(keras_darts/methods/nao_v2/supernet.py, single_path.py).

(Not test_supernet.py: tests/space/test_supernet.py has that name, and pytest
cannot import two test modules of one basename from folders without __init__.)
"""

import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import check_log, run_check_script

from keras_darts.methods.nao_v2 import single_path
from keras_darts.methods.nao_v2.single_path import SinglePathHParams, SinglePathStep
from keras_darts.methods.nao_v2.supernet import NAOSupernet, drop_path
from keras_darts.space import nao_arch

pytestmark = pytest.mark.xdist_group("nao_supernet")

BATCH, SIZE, CLASSES = 4, 8, 10
NO_DECAY = SinglePathHParams(w_weight_decay=0.0)


def tiny_net():
    return NAOSupernet(CLASSES, channels=4, cells_per_stage=1, input_shape=(SIZE, SIZE, 3))


def batch(seed):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.standard_normal((BATCH, SIZE, SIZE, 3)).astype(np.float32)),
            tf.constant(rng.integers(0, CLASSES, BATCH).astype(np.int32)))


def pool(seed, size):
    return nao_arch.random_pool(np.random.default_rng(seed), size)


@pytest.fixture(scope="module")
def trained():
    """One tiny supernet and its step (weight decay 0: weights off the path then
    stay exactly as they are), traced once for the whole module."""
    import keras

    keras.utils.set_random_seed(0)
    net = tiny_net()
    step = SinglePathStep(net, tf.distribute.get_strategy(), BATCH, NO_DECAY, pool_capacity=8)
    step.start_round(100)
    return net, step


def test_cells_and_per_input_weight_copies(trained):
    net, _ = trained
    assert net.num_cells == 5 and net.reductions == (1, 3)
    assert [c.channels for c in net.cells] == [4, 8, 8, 16, 16]
    logits = net(batch(0)[0], tf.constant(pool(0, 1)[0]))
    assert logits.shape == (BATCH, CLASSES)
    for cell in net.cells:
        for position, branch in enumerate(cell.branches):
            copies = nao_arch.num_inputs(position // 2)
            # Both separable convs, one row per input: dw k*k*c, pw c*c, 2 BN affines, twice.
            c = cell.channels
            assert branch.sep_convs.packed.shape == (copies, sum(2 * (k * k * c + c * c + 2 * c)
                                                                 for k in (3, 5)))
            identity = branch.reduce_identity
            assert (identity is not None) == cell.reduction
            if identity is not None:  # Identity at stride 2: one FactorizedReduce per input 0/1.
                assert identity.packed.shape == (2, 2 * c * (c // 2) + 2 * c)
    # WS-BN keeps no running statistics (docs/spaces/nao.md#batch-normalisation).
    assert net.non_trainable_variables == []


def _segment(blocks, prefix):
    """[start, end) of the blocks named prefix... in a packed row."""
    sizes = [int(np.prod(shape)) for _, shape, _ in blocks]
    names = [name for name, _, _ in blocks]
    first = next(i for i, n in enumerate(names) if n.startswith(prefix))
    last = max(i for i, n in enumerate(names) if n.startswith(prefix))
    return sum(sizes[:first]), sum(sizes[:last + 1])


def _rows_used(net, arch):
    """{id(variable): set of (row, [start, end) of that row or None) the path of
    `arch` reads, or None: all of it}."""
    used = {}
    for cell in net.cells:
        cell_arch = nao_arch.cell_of(arch, "reduce" if cell.reduction else "normal")
        for layer in (cell.calibrate_0, cell.calibrate_1):
            for v in layer.variables if layer is not None else ():
                used[id(v)] = None
        for position, branch in enumerate(cell.branches):
            index, op = int(cell_arch[2 * position]), int(cell_arch[2 * position + 1])
            segments = {k: _segment(branch.blocks, f"sep_{k}x{k}/") for k in (3, 5)}
            used[id(branch.sep_convs.packed)] = {
                (row, segments[k]) for row in range(branch.num_inputs) for k in (3, 5)
                if row == index and op == (0 if k == 3 else 1)}
            used[(id(branch.sep_convs.packed), "all")] = {
                (row, segments[k]) for row in range(branch.num_inputs) for k in (3, 5)}
            if branch.reduce_identity is not None:
                on = op == 4 and index < 2
                used[id(branch.reduce_identity.packed)] = {(index, None)} if on else set()
        loose = set(nao_arch.loose_ends(cell_arch))
        used[id(cell.combine_kernel)] = {(s, None) for s in loose}
        used[id(cell.combine_gamma)] = used[id(cell.combine_beta)] = None
        if cell.reduction:
            for v in cell.reduce_loose.variables:
                used[id(v)] = {(s, None) for s in loose & {0, 1}}
    return used


def test_a_step_changes_only_the_sampled_path(trained):
    """Weights off the path get a zero gradient: with weight decay 0 and fresh
    momentum they stay bit-identical; every weight on the path moves."""
    net, step = trained
    arch = pool(1, 1)[0]
    step.set_pool([arch], [1.0])
    step.weight_optimizer.reset()
    before = [v.numpy() for v in net.trainable_variables]
    step.step(batch(1))
    assert step.last_arch_index() == 0
    used = _rows_used(net, arch)
    checked = 0
    for v, old in zip(net.trainable_variables, before):
        if id(v) not in used:  # stem and classifier: always on the path
            assert not np.array_equal(v.numpy(), old), v.path
            continue
        parts = used[id(v)]
        if parts is None:
            assert not np.array_equal(v.numpy(), old), v.path
            continue
        every = used.get((id(v), "all"), {(row, None) for row in range(v.shape[0])})
        for row, segment in every:
            start, end = segment or (0, v.shape[-1] if v.shape.rank > 1 else 1)
            new_part = v.numpy()[row].reshape(-1)[start:end] if v.shape.rank > 1 else v.numpy()[row]
            old_part = old[row].reshape(-1)[start:end] if v.shape.rank > 1 else old[row]
            moved = not np.array_equal(new_part, old_part)
            assert moved == ((row, segment) in parts), (v.path, row, segment, parts)
            checked += 1
    assert checked > 100


def test_one_trace_serves_every_architecture(trained):
    net, step = trained
    archs = pool(2, 5)
    step.set_pool(archs, np.ones(5))
    drawn = set()
    for i in range(8):
        metrics = step.step(batch(10 + i))
        drawn.add(step.last_arch_index())
        assert np.isfinite(float(metrics["loss/train"])) and float(metrics["grad_norm"]) > 0
    assert len(drawn) >= 3
    scores = [step.score(batch(3), arch) for arch in archs]
    assert step._step.experimental_get_tracing_count() == 1
    assert step._score.experimental_get_tracing_count() == 1
    assert all(float(count) == BATCH and 0 <= float(correct) <= BATCH
               for _, correct, count in scores)
    assert len({float(loss) for loss, _, _ in scores}) == 5  # Each arch its own network.
    # evaluate scores the current best architecture through the same trace.
    step.set_eval_arch(archs[3])
    np.testing.assert_array_equal([float(t) for t in step.evaluate(batch(3))],
                                  [float(t) for t in scores[3]])
    accuracies = step.score_pool(archs[:2], [batch(3), batch(4)])
    assert accuracies.shape == (2,) and ((accuracies >= 0) & (accuracies <= 1)).all()
    assert step._score.experimental_get_tracing_count() == 1


def test_drop_path_keep_schedule_is_the_spec_formula():
    net = NAOSupernet(CLASSES, channels=2, cells_per_stage=3, input_shape=(8, 8, 3))
    total, keep = 35200, 0.9
    for cell in (0, 5, 10):
        keep_cell = 1 - (cell + 1) / 11 * (1 - keep)
        for step in (0, total - 1):
            expected = 1 - (step + 1) / total * (1 - keep_cell)
            assert net.drop_path_keep(cell, (step + 1) / total) == pytest.approx(expected)
    assert net.drop_path_keep(10, 1.0) == pytest.approx(keep)  # Last cell, last step.
    x = tf.ones((4, 2, 2, 1))
    y = drop_path(x, 0.8, tf.constant([0.1, 0.5, 0.79, 0.95]))
    np.testing.assert_allclose(y.numpy()[:, 0, 0, 0], [0.0, 1.25, 1.25, 1.25])


def test_sampling_follows_the_probabilities():
    probs = tf.constant([0.7, 0.3, 0.0, 0.0])
    draws = tf.function(lambda: tf.map_fn(
        lambda c: single_path.sample_index(probs, 7, c), tf.range(2000, dtype=tf.int64)))()
    draws = draws.numpy()
    assert set(draws.tolist()) <= {0, 1}
    sigma = np.sqrt(0.7 * 0.3 / len(draws))
    assert abs((draws == 0).mean() - 0.7) < 3 * sigma
    again = [int(single_path.sample_index(probs, 7, c)) for c in (0, 1, 2, 3)]
    assert again == draws[:4].tolist()  # A pure function of (seed, counter).


def test_set_pool_refuses_bad_input(trained):
    _, step = trained
    with pytest.raises(ValueError, match="probabilities"):
        step.set_pool(pool(0, 2), [0.0, 0.0])
    with pytest.raises(ValueError, match="1..8"):
        step.set_pool(pool(0, 9), np.ones(9))
    bad = pool(0, 1)
    bad[0, 0] = 5  # node 0 reads only states 0 / 1
    with pytest.raises(Exception, match="position 0"):
        step.set_pool(bad, [1.0])


def _state(net, step):
    return ([v.numpy() for v in net.variables]
            + [v.numpy() for v in step.weight_optimizer.slots["momentum"]])


@pytest.mark.slow
def test_resume_repeats_the_uninterrupted_run(trained, tmp_path):
    """3 steps, checkpoint, 3 more == a new supernet and step restored from the
    checkpoint taking the same 3: same sampled indices, bit-identical weights."""
    net, step = trained
    step.set_pool(pool(4, 6), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    step.start_round(20)
    step.set_weight_lr(0.05)
    data = [batch(20 + i) for i in range(6)]
    for b in data[:3]:
        step.step(b)
    checkpoint = tf.train.Checkpoint(weights=list(net.variables), optimizer=step.weight_optimizer,
                                     **step.checkpoint_state())
    path = checkpoint.write(str(tmp_path / "ckpt"))
    straight = [step.step(b) and step.last_arch_index() for b in data[3:]]
    expected = _state(net, step)

    import keras

    keras.utils.set_random_seed(123)  # Other initial weights: the restore must set them all.
    net_2 = tiny_net()
    step_2 = SinglePathStep(net_2, tf.distribute.get_strategy(), BATCH, NO_DECAY,
                            pool_capacity=8)
    tf.train.Checkpoint(weights=list(net_2.variables), optimizer=step_2.weight_optimizer,
                        **step_2.checkpoint_state()).read(path).assert_consumed()
    resumed = [step_2.step(b) and step_2.last_arch_index() for b in data[3:]]
    assert resumed == straight
    assert float(step_2.weight_optimizer.learning_rate.numpy()) == pytest.approx(0.05)
    for a, b in zip(expected, _state(net_2, step_2)):
        np.testing.assert_array_equal(a, b)


SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supernet_distributed_check.py")


@pytest.mark.slow
def test_mirrored_steps_equal_one_device():
    """2 logical CPUs under MirroredStrategy (branches masked, BatchNorm
    synchronised) == one device (branches switched), in a fresh interpreter."""
    proc, result = run_check_script(SCRIPT, "NAO_DISTRIBUTED all equal")
    assert proc.returncode == 0 and result is not None, check_log(proc)
    assert result["variables_moved"] > 0 and result["max_abs_diff"]["weights"] < 1e-5
