"""The DARTS ImageNet recipe's image transforms (docs/evaluation.md).

Training: a random resized crop (area 8-100 % of the image, aspect ratio 3/4-4/3,
resized to the network's size), a random left-right flip and a colour jitter
(brightness, contrast and saturation factors in [0.6, 1.4], hue shift in
[-0.2, 0.2] of the colour circle, applied in a random order).  Test: resize the
shorter side to size * 256 / 224, then crop the centre size x size.  Both work on
one float32 image in [0, 1] of any size; every random choice comes from a
shape-[2] integer `seed` (stateless: the same seed gives the same image).

These follow the definitions of torchvision's RandomResizedCrop, ColorJitter,
Resize and CenterCrop, which the reference code uses, written here with TF ops.
"""

import math

import tensorflow as tf

MIN_AREA, MAX_AREA = 0.08, 1.0
MIN_RATIO, MAX_RATIO = 3.0 / 4.0, 4.0 / 3.0
CROP_ATTEMPTS = 10
JITTER = 0.4        # Brightness, contrast, saturation: factor in [1 - 0.4, 1 + 0.4].
HUE_JITTER = 0.2    # Hue shift in [-0.2, 0.2] (fraction of the colour circle).
TEST_RESIZE_RATIO = 256.0 / 224.0
MEAN = (0.485, 0.456, 0.406)  # The statistics the reference normalises with.
STD = (0.229, 0.224, 0.225)


def crop_window(seed, height, width):
    """(top, left, crop height, crop width) of a random resized crop, int32 scalars.

    Up to 10 candidates (area fraction uniform in [0.08, 1], log aspect ratio
    uniform in [log 3/4, log 4/3]); the first that fits the image wins, at a
    uniform position.  If none fits: the centre crop with the aspect ratio
    clamped to [3/4, 4/3].
    """
    area_seed, ratio_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = h_f * w_f * tf.random.stateless_uniform([CROP_ATTEMPTS], area_seed, MIN_AREA,
                                                   MAX_AREA)
    ratio = tf.exp(tf.random.stateless_uniform([CROP_ATTEMPTS], ratio_seed,
                                               math.log(MIN_RATIO), math.log(MAX_RATIO)))
    crop_w = tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32)
    crop_h = tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32)
    fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio.
    in_ratio = w_f / h_f
    fallback_w = tf.where(in_ratio > MAX_RATIO, tf.cast(tf.round(h_f * MAX_RATIO), tf.int32),
                          width)
    fallback_h = tf.where(in_ratio < MIN_RATIO, tf.cast(tf.round(w_f / MIN_RATIO), tf.int32),
                          height)
    any_fits = tf.reduce_any(fits)
    h = tf.where(any_fits, crop_h[first], fallback_h)
    w = tf.where(any_fits, crop_w[first], fallback_w)
    u = tf.random.stateless_uniform([2], pos_seed)
    top = tf.where(any_fits, tf.cast(u[0] * tf.cast(height - h + 1, tf.float32), tf.int32),
                   (height - h) // 2)
    left = tf.where(any_fits, tf.cast(u[1] * tf.cast(width - w + 1, tf.float32), tf.int32),
                    (width - w) // 2)
    # u < 1, but float rounding could reach the bound: keep the window inside.
    return tf.minimum(top, height - h), tf.minimum(left, width - w), h, w


def _resize_to(image, height, width):
    image = tf.image.resize(image, tf.stack([height, width]), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)  # The antialias filter overshoots slightly.


def random_resized_crop(image, seed, size):
    shape = tf.shape(image)
    top, left, h, w = crop_window(seed, shape[0], shape[1])
    crop = tf.image.crop_to_bounding_box(image, top, left, h, w)
    return tf.ensure_shape(_resize_to(crop, size, size), (size, size, image.shape[-1]))


def _grey(image):
    return tf.image.rgb_to_grayscale(image) if image.shape[-1] == 3 else image


def _blend(image, other, factor):
    return tf.clip_by_value(other + factor * (image - other), 0.0, 1.0)


def color_jitter(image, seed):
    """Brightness, contrast, saturation and hue jitter in a random order
    (`jitter` with factors and order drawn from `seed`)."""
    factor_seed, hue_seed, order_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 3))
    factors = tf.random.stateless_uniform([3], factor_seed, 1.0 - JITTER, 1.0 + JITTER)
    hue = tf.random.stateless_uniform([], hue_seed, -HUE_JITTER, HUE_JITTER)
    num_transforms = 4 if image.shape[-1] == 3 else 2
    order = tf.argsort(tf.random.stateless_uniform([num_transforms], order_seed))
    return jitter(image, factors[0], factors[1], factors[2], hue, order)


def jitter(image, brightness, contrast, saturation, hue, order):
    """Applies the transforms in `order` (indices: 0 brightness, 1 contrast,
    2 saturation, 3 hue).  brightness: image * b; contrast: blend with the mean
    grey level; saturation: blend with the grey image; hue: rotate the hue by
    `hue` of the colour circle.  Grey (1-channel) images take only 0 and 1."""
    transforms = [
        lambda x: tf.clip_by_value(x * brightness, 0.0, 1.0),
        lambda x: _blend(x, tf.reduce_mean(_grey(x)), contrast),
    ]
    if image.shape[-1] == 3:
        transforms += [lambda x: _blend(x, _grey(x), saturation),
                       lambda x: tf.image.adjust_hue(x, hue)]
    for position in range(len(transforms)):
        image = tf.switch_case(order[position], [lambda f=f: f(image) for f in transforms])
    return image


def train_transform(image, seed, size, flip=True):
    """The recipe's training augmentation of one image -> size x size."""
    crop_seed, flip_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    image = random_resized_crop(image, crop_seed, size)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return color_jitter(image, jitter_seed)


def test_transform(image, size):
    """Resize the shorter side to size * 256/224 (keeping the aspect ratio), crop the centre."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    short = float(int(size * TEST_RESIZE_RATIO))
    scale = short / tf.minimum(h, w)
    # torchvision: the shorter side gets exactly `short`, the other int(scale * side).
    new_h = tf.cast(tf.where(h <= w, short, tf.floor(h * scale)), tf.int32)
    new_w = tf.cast(tf.where(w < h, short, tf.floor(w * scale)), tf.int32)
    image = _resize_to(image, new_h, new_w)
    # torchvision's centre crop rounds the offset: int(round((side - size) / 2)).
    top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2.0), tf.int32)
    image = tf.image.crop_to_bounding_box(image, top, left, size, size)
    return tf.ensure_shape(image, (size, size, image.shape[-1]))
