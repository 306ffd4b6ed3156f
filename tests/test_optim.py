"""keras_darts/optim.py: clipping by the global norm."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.optim import clip_by_global_norm


@pytest.mark.parametrize("clip", [0.5, 100.0])
def test_clip_by_global_norm_is_tensorflows_bit_for_bit(clip):
    """Same values and norm as tf.clip_by_global_norm (clipping or not), None kept,
    IndexedSlices scaled as slices, traced without a per-tensor Identity."""
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.normal(size=s).astype(np.float32)) for s in [(3, 3, 4, 1), (7,)]]
    grads += [None, tf.IndexedSlices(tf.constant(rng.normal(size=(2, 5)).astype(np.float32)),
                                     tf.constant([0, 3]), tf.constant([4, 5]))]
    ours, ours_norm = clip_by_global_norm(grads, clip)
    theirs, their_norm = tf.clip_by_global_norm(grads, clip)
    assert ours_norm.numpy() == their_norm.numpy()
    assert ours[2] is None
    assert isinstance(ours[3], tf.IndexedSlices)
    np.testing.assert_array_equal(ours[3].indices, theirs[3].indices)
    for a, b in zip(ours[:2] + [ours[3].values], theirs[:2] + [theirs[3].values]):
        np.testing.assert_array_equal(a, b)
    if clip < 1.0:
        assert not np.array_equal(ours[0], grads[0])  # It did clip.
    graph = tf.function(lambda *g: clip_by_global_norm(list(g), clip)[0]).get_concrete_function(
        *[tf.TensorSpec(g.shape) for g in grads[:2]]).graph
    assert "Identity" not in {op.type for op in graph.get_operations()
                              if not op.name.startswith("Identity")}  # (The outputs' own.)


def test_clip_by_global_norm_of_a_nan_gradient_is_nan_everywhere():
    ours, norm = clip_by_global_norm([tf.constant([np.nan, 1.0]), tf.constant([2.0])], 5.0)
    assert np.isnan(norm) and np.isnan(ours[1].numpy()).all()
