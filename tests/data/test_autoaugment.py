"""Tests for keras_darts.data.autoaugment: each operation against a NumPy reference,
the CIFAR-10 table, stateless randomness, and the `autoaugment` training pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.data import autoaugment as aa
from keras_darts.data import datasets as data
from keras_darts.errors import DataError

FILL = 128


def random_levels(shape, seed=0, low=0, high=256):
    return np.random.default_rng(seed).integers(low, high, shape).astype(np.float32)


def run(op, image, *args):
    return op(tf.constant(image, tf.float32), *args).numpy()


def run_levels(op, image, *args):
    """The operation as a policy step sees it: rounded and clipped to 0..255."""
    return aa.to_levels(op(tf.constant(image, tf.float32), *args)).numpy()


def without_luma_ties(image):
    """Nudges red so no pixel's luma is exactly halfway between two levels (where float
    rounding may go either way)."""
    image = image.copy()
    while True:
        r, g, b = (image[..., i].astype(np.int64) for i in range(3))
        ties = (299 * r + 587 * g + 114 * b) % 1000 == 500
        if not ties.any():
            return image
        image[..., 0][ties] = (image[..., 0][ties] + 1) % 256


def np_grey(image):
    if image.shape[-1] == 1:
        return image
    r, g, b = (image[..., i].astype(np.int64) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000)[..., None].astype(np.float32)


def np_blend(degenerate, image, factor):
    return np.clip(np.round(degenerate + factor * (image - degenerate)), 0, 255)


# --------------------------------------------------------------------------
# Pixel-level operations


def test_invert():
    image = random_levels((4, 5, 3))
    np.testing.assert_array_equal(run(aa.invert, image), 255 - image)


def test_solarize_inverts_levels_at_or_above_the_threshold():
    image = random_levels((6, 6, 3))
    image[0, 0, 0], image[0, 1, 0] = 127, 128
    expected = np.where(image < 128, image, 255 - image)
    np.testing.assert_array_equal(run(aa.solarize, image, 128.0), expected)
    np.testing.assert_array_equal(run(aa.solarize, image, 256.0), image)


def test_posterize_keeps_the_high_bits():
    image = random_levels((5, 5, 3))
    expected = (image.astype(np.uint8) & np.uint8(0b11100000)).astype(np.float32)
    np.testing.assert_array_equal(run(aa.posterize, image, 3), expected)
    np.testing.assert_array_equal(run(aa.posterize, image, 8), image)


def test_autocontrast_stretches_each_channel_to_the_full_range():
    image = random_levels((5, 6, 2), low=40, high=90)
    image[..., 1] = 77.0  # A constant channel stays as it is.
    out = run_levels(aa.autocontrast, image)
    low, high = image[..., 0].min(), image[..., 0].max()
    expected = np.round((image[..., 0] - low) * 255.0 / (high - low))
    np.testing.assert_allclose(out[..., 0], expected, atol=1)
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255
    np.testing.assert_array_equal(out[..., 1], image[..., 1])


def np_equalize(image):
    """PIL's equalisation: level -> (step // 2 + pixels darker) // step, where step is
    the pixel count outside the brightest present level, // 255."""
    out = image.copy()
    for c in range(image.shape[-1]):
        levels = image[..., c].astype(np.int64)
        histogram = np.bincount(levels.ravel(), minlength=256)
        step = (levels.size - histogram[levels.max()]) // 255
        if step:
            darker = np.concatenate([[0], np.cumsum(histogram)[:-1]])
            out[..., c] = np.minimum((darker + step // 2) // step, 255)[levels]
    return out


def test_equalize_matches_a_numpy_histogram_equalisation():
    image = random_levels((24, 24, 3), low=60, high=110)
    out = run_levels(aa.equalize, image)
    np.testing.assert_array_equal(out, np_equalize(image))
    assert out.max() - out.min() > 200  # A narrow histogram is spread out.
    small = random_levels((4, 4, 1))  # Fewer than 256 pixels: step 0, identity.
    np.testing.assert_array_equal(run(aa.equalize, small), small)


def test_brightness_scales_the_levels():
    image = random_levels((4, 4, 3))
    np.testing.assert_array_equal(run_levels(aa.brightness, image, 1.5),
                                  np.clip(np.round(image * 1.5), 0, 255))


def test_contrast_blends_with_the_mean_grey_level():
    image = without_luma_ties(random_levels((5, 6, 3)))
    mean = np.floor(np_grey(image).sum() / (5 * 6) + 0.5)
    np.testing.assert_array_equal(run_levels(aa.contrast, image, 0.5),
                                  np_blend(mean, image, 0.5))


def test_color_blends_with_the_grey_image_and_is_the_identity_on_grey():
    image = without_luma_ties(random_levels((5, 6, 3)))
    np.testing.assert_array_equal(run_levels(aa.color, image, 0.25),
                                  np_blend(np_grey(image), image, 0.25))
    grey_image = random_levels((5, 6, 1))
    np.testing.assert_array_equal(run_levels(aa.color, grey_image, 0.25), grey_image)


def np_smoothed(image):
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0
    out = image.copy()
    for y in range(1, image.shape[0] - 1):
        for x in range(1, image.shape[1] - 1):
            window = image[y - 1:y + 2, x - 1:x + 2]
            out[y, x] = np.floor(np.einsum("ij,ijc->c", kernel, window) + 0.5)
    return out


def test_sharpness_blends_with_the_smoothed_image_keeping_the_border():
    image = random_levels((5, 6, 3))
    expected = np_blend(np_smoothed(image), image, 2.0)
    out = run_levels(aa.sharpness, image, 2.0)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[0], image[0])  # Border rows keep their values.
    assert not np.array_equal(out, image)


# --------------------------------------------------------------------------
# Geometric operations


def distinct_image(height, width, channels=1):
    """Every pixel a different level below the fill value."""
    return np.arange(height * width * channels, dtype=np.float32).reshape(height, width, channels)


def test_rotate_by_90_degrees_is_exact_on_a_square_image():
    image = distinct_image(5, 5, 2)
    np.testing.assert_array_equal(run(aa.rotate, image, 90.0), np.rot90(image))
    np.testing.assert_array_equal(run(aa.rotate, image, -90.0), np.rot90(image, -1))
    np.testing.assert_array_equal(run(aa.rotate, image, 0.0), image)


def test_translate_shifts_by_whole_pixels_and_fills_grey():
    image = distinct_image(4, 6)
    right = np.full_like(image, FILL)
    right[:, 2:] = image[:, :-2]
    np.testing.assert_array_equal(run(aa.translate_x, image, 2.0), right)
    up = np.full_like(image, FILL)
    up[:-1] = image[1:]
    np.testing.assert_array_equal(run(aa.translate_y, image, -1.0), up)


def test_shear_moves_each_row_or_column_by_shear_times_its_centre():
    # Shear 2: row y (centre y + 0.5) samples 2y + 1 pixels to the right: whole pixels.
    image = distinct_image(3, 8)
    expected = np.full_like(image, FILL)
    for y in range(3):
        shift = 2 * y + 1
        expected[y, :8 - shift] = image[y, shift:]
    np.testing.assert_array_equal(run(aa.shear_x, image, 2.0), expected)
    transposed = np.transpose(image, (1, 0, 2))
    np.testing.assert_array_equal(run(aa.shear_y, transposed, 2.0),
                                  np.transpose(expected, (1, 0, 2)))


# --------------------------------------------------------------------------
# The policy


def test_cifar10_table_has_25_sub_policies_of_two_valid_steps():
    assert len(aa.CIFAR10_POLICY) == 25
    aa.check_policy(aa.CIFAR10_POLICY)
    for sub_policy in aa.CIFAR10_POLICY:
        assert len(sub_policy) == 2
        for name, probability, magnitude in sub_policy:
            assert name in aa.OPERATIONS and 0.0 <= probability <= 1.0
            assert 0 <= magnitude <= 9
    used = {name for sub_policy in aa.CIFAR10_POLICY for name, _, _ in sub_policy}
    assert used == set(aa.OPERATIONS) - {"shear_x"}  # The CIFAR-10 table never shears in x.
    assert all(len(levels) == aa.NUM_BINS for levels in aa.LEVELS.values())
    assert aa.LEVELS["posterize"] == (8, 8, 7, 7, 6, 6, 5, 5, 4, 4)
    assert aa.LEVELS["solarize"][0] == 256 and aa.LEVELS["solarize"][-1] == 0
    assert aa.LEVELS["translate_x"][-1] == pytest.approx(150 / 331)
    with pytest.raises(ValueError, match="invalid step"):
        aa.check_policy(((("invert", 0.5, 10), ("equalize", 0.5, 0)),))
    with pytest.raises(ValueError, match="2"):
        aa.check_policy(((("invert", 0.5, 1),),))


def test_steps_apply_with_their_probability():
    image = tf.constant(random_levels((4, 4, 3)))
    always_invert = ((("invert", 1.0, 0), ("solarize", 0.0, 9)),)
    for i in range(5):
        out = aa.apply_policy(image, tf.constant([0, i]), always_invert).numpy()
        np.testing.assert_array_equal(out, 255 - image.numpy())


def test_translate_is_a_fraction_of_the_image_side():
    image = tf.constant(distinct_image(2, 64))
    widest = ((("translate_x", 1.0, 9), ("invert", 0.0, 0)),)
    sides = set()
    for i in range(8):
        out = aa.apply_policy(image, tf.constant([4, i]), widest).numpy()[0, :, 0]
        filled = np.flatnonzero(out == FILL)
        assert len(filled) == round(150 / 331 * 64) == 29
        sides.add(int(filled[0]) == 0)
    assert sides == {True, False}  # The direction is drawn at random.


def test_same_seed_same_image_and_different_seeds_differ():
    image = tf.constant(random_levels((8, 8, 3)), tf.uint8)
    first = aa.apply_policy(image, tf.constant([5, 6])).numpy()
    np.testing.assert_array_equal(first, aa.apply_policy(image, tf.constant([5, 6])).numpy())
    outputs = {aa.apply_policy(image, tf.constant([5, i])).numpy().tobytes() for i in range(24)}
    assert len(outputs) > 8


@pytest.mark.parametrize("shape,dtype", [((6, 9, 3), tf.uint8), ((7, 5, 1), tf.float32)])
def test_dtype_shape_and_range_are_kept_inside_dataset_map(shape, dtype):
    image = tf.constant(random_levels(shape, seed=3), dtype)
    seeds = tf.data.Dataset.range(16).map(lambda i: tf.stack([i, 2 * i]))
    outputs = seeds.map(lambda s: aa.apply_policy(image, s))
    assert outputs.element_spec.shape == shape
    for out in outputs:
        assert out.dtype == dtype and out.shape == shape
        values = out.numpy()
        assert values.min() >= 0 and values.max() <= 255
        np.testing.assert_array_equal(values, np.round(values))


# --------------------------------------------------------------------------
# The training pipeline


def test_load_train_data_with_autoaugment_on_digits():
    auto = data.load_train_data("digits", 16, seed=1, cutout=4, augmentation="autoaugment")
    images, labels = next(iter(auto.train))
    assert images.shape == (16, 8, 8, 1) and labels.shape == (16,)
    assert np.isfinite(images.numpy()).all()
    again = data.load_train_data("digits", 16, seed=1, cutout=4, augmentation="autoaugment")
    np.testing.assert_array_equal(images.numpy(), next(iter(again.train))[0].numpy())
    plain = data.load_train_data("digits", 16, seed=1, cutout=4)
    plain_images, plain_labels = next(iter(plain.train))
    np.testing.assert_array_equal(labels.numpy(), plain_labels.numpy())  # Same order.
    assert not np.array_equal(images.numpy(), plain_images.numpy())
    # Test images are never augmented.
    np.testing.assert_array_equal(next(iter(auto.test))[0].numpy(),
                                  next(iter(plain.test))[0].numpy())


def test_unknown_augmentation_is_refused():
    with pytest.raises(DataError, match=r"--augmentation must be one of .*'autoaugment'.*"
                                        r"'auto_augment'"):
        data.load_train_data("digits", 16, augmentation="auto_augment")
