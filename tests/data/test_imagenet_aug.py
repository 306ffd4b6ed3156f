"""The ImageNet recipe's transforms (keras_darts/imagenet_aug.py) and
`load_train_data(augmentation="imagenet")`."""

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_darts.data import datasets as data
from keras_darts.data import imagenet_aug
from keras_darts.errors import DataError


def _seed(i):
    return tf.constant([7, i], tf.int64)


def _window(seed, height, width):
    return tuple(int(v) for v in imagenet_aug.crop_window(seed, height, width))


def test_crop_window_area_and_aspect_within_the_recipes_ranges():
    height, width = 60, 80
    areas, ratios = [], []
    for i in range(200):
        top, left, h, w = _window(_seed(i), height, width)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        areas.append(h * w / (height * width))
        ratios.append(w / h)
    # Rounding the sides to whole pixels moves area and ratio a little past the bounds.
    assert min(areas) >= 0.08 * 0.85 and max(areas) <= 1.0
    assert min(ratios) >= 0.75 * 0.9 and max(ratios) <= 4 / 3 * 1.1
    # Uniform in [0.08, 1] (mean 0.54), not a constant: the crops really vary.
    assert 0.4 < np.mean(areas) < 0.7 and np.std(areas) > 0.15
    assert _window(_seed(3), height, width) == _window(_seed(3), height, width)


@pytest.mark.parametrize("height, width, expected", [
    (2, 100, (0, 48, 2, 3)),     # Too wide for any candidate: centre crop, ratio 4/3.
    (100, 2, (48, 0, 3, 2)),     # Too tall: centre crop, ratio 3/4 (h = round(2 / 0.75)).
])
def test_crop_window_falls_back_to_a_clamped_centre_crop(height, width, expected):
    assert _window(_seed(0), height, width) == expected


def test_random_resized_crop_resizes_the_window():
    image = tf.random.stateless_uniform([40, 30, 3], [1, 2])
    out = imagenet_aug.random_resized_crop(image, _seed(5), 16)
    top, left, h, w = _window(_seed(5), 40, 30)
    window = image[top:top + h, left:left + w]
    expected = tf.clip_by_value(tf.image.resize(window, (16, 16), antialias=True), 0.0, 1.0)
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)


def test_jitter_transforms_follow_their_definitions():
    image = tf.random.stateless_uniform([6, 5, 3], [3, 4]) * 0.8 + 0.1
    x = image.numpy().astype(np.float64)
    grey = lambda im: (im * np.array([0.2989, 0.587, 0.114])).sum(-1, keepdims=True)
    bright = lambda im: np.clip(im * 1.2, 0, 1)
    contrast = lambda im: np.clip(grey(im).mean() + 0.5 * (im - grey(im).mean()), 0, 1)
    saturate = lambda im: np.clip(grey(im) + 1.3 * (im - grey(im)), 0, 1)

    def run(order, hue=0.0):
        return imagenet_aug.jitter(image, 1.2, 0.5, 1.3, hue, tf.constant(order)).numpy()

    np.testing.assert_allclose(run([0, 1, 2, 3]), saturate(contrast(bright(x))), atol=1e-4)
    np.testing.assert_allclose(run([2, 1, 0, 3]), bright(contrast(saturate(x))), atol=1e-4)
    # Hue: a full turn of 0.5 + 0.5 is the identity; 0.5 maps pure red to cyan.
    red = tf.constant([[[1.0, 0.0, 0.0]]])
    cyan = imagenet_aug.jitter(red, 1.0, 1.0, 1.0, 0.5, tf.constant([3, 0, 1, 2]))
    np.testing.assert_allclose(cyan.numpy(), [[[0.0, 1.0, 1.0]]], atol=1e-6)


def test_color_jitter_order_is_random_and_grey_images_get_two_transforms():
    image = tf.random.stateless_uniform([6, 5, 3], [3, 4])
    outs = {imagenet_aug.color_jitter(image, _seed(i)).numpy().tobytes() for i in range(6)}
    assert len(outs) == 6
    grey = tf.random.stateless_uniform([6, 5, 1], [3, 4])
    out = imagenet_aug.color_jitter(grey, _seed(0))
    assert out.shape == (6, 5, 1) and float(tf.reduce_min(out)) >= 0.0
    np.testing.assert_array_equal(imagenet_aug.color_jitter(image, _seed(2)).numpy(),
                                  imagenet_aug.color_jitter(image, _seed(2)).numpy())


def test_test_transform_resizes_the_shorter_side_then_crops_the_centre():
    # 224 -> shorter side 256; a 256 x 320 image is not resized, only cropped.
    image = tf.random.stateless_uniform([256, 320, 3], [5, 6])
    out = imagenet_aug.test_transform(image, 224)
    np.testing.assert_array_equal(out.numpy(), image[16:240, 48:272].numpy())
    # A smaller image: shorter side to int(8 * 256 / 224) = 9, the other int(9 / 6 * 12) = 18.
    small = tf.random.stateless_uniform([6, 12, 1], [5, 6])
    resized = tf.clip_by_value(tf.image.resize(small, (9, 18), antialias=True), 0.0, 1.0)
    out = imagenet_aug.test_transform(small, 8)
    top, left = round((9 - 8) / 2), round((18 - 8) / 2)
    np.testing.assert_allclose(out.numpy(), resized[top:top + 8, left:left + 8].numpy(), atol=1e-6)


def _write_folder(root, sizes):
    """Two classes of random RGB PNGs of the given sizes."""
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            tf.io.write_file(str(root / label / f"{i}.png"), tf.io.encode_png(pixels))


def test_load_train_data_imagenet_recipe_on_images_of_varying_size(tmp_path):
    _write_folder(tmp_path, [(20, 30), (24, 16), (18, 18), (30, 22), (16, 40)] * 2)
    loaded = data.load_train_data(f"folder:{tmp_path}", 4, image_size=12, seed=1,
                                  augmentation="imagenet")
    assert loaded.info.image_shape == (12, 12, 3)
    images, _ = next(iter(loaded.train))
    assert images.shape == (4, 12, 12, 3)
    test_images, _ = next(iter(loaded.test))
    assert test_images.shape[1:] == (12, 12, 3)
    # The same stream again: identical (seeded); another seed: different crops.
    again, _ = next(iter(data.load_train_data(f"folder:{tmp_path}", 4, image_size=12, seed=1,
                                              augmentation="imagenet").train))
    np.testing.assert_array_equal(images.numpy(), again.numpy())
    other, _ = next(iter(data.load_train_data(f"folder:{tmp_path}", 4, image_size=12, seed=2,
                                              augmentation="imagenet").train))
    assert not np.array_equal(images.numpy(), other.numpy())


def test_imagenet_recipe_on_digits_and_unknown_augmentation():
    loaded = data.load_train_data("digits", 8, augmentation="imagenet")
    images, _ = next(iter(loaded.train))
    assert images.shape == (8, 8, 8, 1) and math.isfinite(float(tf.reduce_sum(images)))
    with pytest.raises(DataError, match="--augmentation must be one of"):
        data.load_train_data("digits", 8, augmentation="randaugment")
