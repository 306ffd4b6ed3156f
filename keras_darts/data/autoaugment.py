"""The AutoAugment CIFAR-10 policy with stateless TF ops (docs/evaluation.md#autoaugment).

Each image picks one of the 25 sub-policies uniformly; a sub-policy is two
(operation, probability, magnitude bin 0..9) steps, each applied with its
probability.  The table and the magnitude ranges follow the widely used PyTorch
`CIFAR10Policy` (whose table equals torchvision's `AutoAugmentPolicy.CIFAR10`).

Every operation works on one image [H, W, C] (C = 1 or 3, any size) whose
values are 8-bit levels held as float32, and returns such an image: results are
rounded and clipped to 0..255 after each step, like an 8-bit PIL image.
`apply_policy` accepts uint8 or float images in 0..255 and keeps the dtype.  All
randomness comes from a shape-[2] integer seed, so it runs inside
`tf.data.Dataset.map` and a resumed run reproduces the same images.
"""

import math

import numpy as np
import tensorflow as tf

NUM_BINS = 10
MAX_LEVEL = 255.0
FILL = 128.0  # Grey fill of the geometric ops, as in the PyTorch policy.
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> "L" weights (ITU-R 601-2).
SMOOTH_KERNEL = ((1.0, 1.0, 1.0), (1.0, 5.0, 1.0), (1.0, 1.0, 1.0))  # PIL's SMOOTH, / 13.
TRANSLATE_FRACTION = 150.0 / 331.0  # Largest shift: 150 px of a 331 px image.


def _bins(first, last):
    return tuple(float(v) for v in np.linspace(first, last, NUM_BINS))


# Magnitude of each operation per bin 0..9 (the sign is drawn at random for SIGNED).
LEVELS = {
    "shear_x": _bins(0.0, 0.3),
    "shear_y": _bins(0.0, 0.3),
    "translate_x": _bins(0.0, TRANSLATE_FRACTION),  # A fraction of the image width.
    "translate_y": _bins(0.0, TRANSLATE_FRACTION),  # A fraction of the image height.
    "rotate": _bins(0.0, 30.0),  # Degrees.
    "color": _bins(0.0, 0.9),  # Enhancement factor 1 +- level.
    "contrast": _bins(0.0, 0.9),
    "sharpness": _bins(0.0, 0.9),
    "brightness": _bins(0.0, 0.9),
    "posterize": tuple(float(b) for b in np.round(np.linspace(8, 4, NUM_BINS))),  # Bits kept.
    "solarize": _bins(256.0, 0.0),  # Levels >= threshold are inverted.
    "autocontrast": (0.0,) * NUM_BINS,
    "equalize": (0.0,) * NUM_BINS,
    "invert": (0.0,) * NUM_BINS,
}
OPERATIONS = tuple(LEVELS)
SIGNED = frozenset({"shear_x", "shear_y", "translate_x", "translate_y", "rotate",
                    "color", "contrast", "sharpness", "brightness"})

# The 25 sub-policies of the CIFAR-10 table: ((operation, probability, bin), (...)).
CIFAR10_POLICY = (
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translate_x", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shear_y", 0.5, 8), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shear_y", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translate_x", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translate_y", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.6, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translate_y", 0.9, 9), ("translate_y", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translate_y", 0.7, 9), ("autocontrast", 0.9, 1)),
)
STEPS_PER_SUB_POLICY = 2


# --------------------------------------------------------------------------
# Pixel-level operations


def to_levels(image):
    """float32 8-bit levels: rounded and clipped to 0..255, as an 8-bit image stores them."""
    return tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, MAX_LEVEL)


def _round_half_up(x):
    return tf.floor(x + 0.5)  # PIL's integer arithmetic rounds halves up.


def invert(image):
    return MAX_LEVEL - image


def solarize(image, threshold):
    """Inverts the levels >= threshold (256: nothing)."""
    return tf.where(image < threshold, image, MAX_LEVEL - image)


def posterize(image, bits):
    """Keeps the `bits` high bits of each level (8: identity)."""
    step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
    return tf.floor(image / step) * step


def autocontrast(image):
    """Stretches each channel linearly so its darkest level is 0 and its brightest 255;
    a constant channel is left as it is."""
    low = tf.reduce_min(image, axis=(0, 1))
    high = tf.reduce_max(image, axis=(0, 1))
    stretched = (image - low) * tf.math.divide_no_nan(MAX_LEVEL, high - low)
    return tf.where(high > low, stretched, image)


def _equalize_channel(channel):
    """PIL's histogram equalisation of one [H, W] channel of integer levels: each level
    maps to (step // 2 + pixels below it) // step, where step is the pixel count
    outside the brightest level, // 255; identity when step is 0."""
    levels = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(levels, minlength=256, maxlength=256)
    step = (tf.size(levels) - histogram[tf.reduce_max(levels)]) // 255
    lookup = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(step, 1)
    equalized = tf.cast(tf.gather(tf.minimum(lookup, 255), levels), tf.float32)
    return tf.where(step > 0, equalized, channel)


def equalize(image):
    return tf.stack([_equalize_channel(image[..., c]) for c in range(image.shape[-1])], axis=-1)


def grey(image):
    """The luma as a [H, W, 1] image of integer levels; a 1-channel image is its own grey."""
    if image.shape[-1] == 1:
        return image
    return _round_half_up(tf.tensordot(image, tf.constant(LUMA), axes=1))[..., None]


def _blend(degenerate, image, factor):
    """PIL's enhancement: factor 0 gives `degenerate`, 1 the image, > 1 extrapolates."""
    return degenerate + factor * (image - degenerate)


def brightness(image, factor):
    return _blend(tf.zeros_like(image), image, factor)


def color(image, factor):
    """Saturation: blend with the grey image (identity on 1-channel images)."""
    return _blend(grey(image), image, factor)


def contrast(image, factor):
    """Blend with the mean grey level (rounded)."""
    return _blend(_round_half_up(tf.reduce_mean(grey(image))), image, factor)


def _smoothed(image):
    """PIL's SMOOTH filter; the border pixels keep their values."""
    kernel = tf.constant(SMOOTH_KERNEL) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, image.shape[-1], 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "SAME")[0]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = tf.range(height), tf.range(width)
    inner_rows = (rows > 0) & (rows < height - 1)
    inner_cols = (cols > 0) & (cols < width - 1)
    inner = inner_rows[:, None, None] & inner_cols[None, :, None]
    return tf.where(inner, _round_half_up(smooth), image)


def sharpness(image, factor):
    """Blend with the smoothed image (factor > 1 sharpens)."""
    return _blend(_smoothed(image), image, factor)


# --------------------------------------------------------------------------
# Geometric operations: output pixel (x, y) samples the input at
# (a0 x + a1 y + a2, b0 x + b1 y + b2) in pixel-index coordinates, FILL outside.


def _affine(image, row_x, row_y, interpolation):
    transform = tf.cast(tf.stack([*row_x, *row_y, 0.0, 0.0]), tf.float32)[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=FILL, interpolation=interpolation, fill_mode="CONSTANT")
    return tf.ensure_shape(out[0], image.shape)


def shear_x(image, shear):
    """PIL's affine (1, shear, 0, 0, 1, 0) about the top-left corner (pixel centres at
    +0.5): row y moves left by shear * (y + 0.5) pixels.  Bilinear."""
    shear = tf.cast(shear, tf.float32)
    return _affine(image, (1.0, shear, shear / 2.0), (0.0, 1.0, 0.0), "BILINEAR")


def shear_y(image, shear):
    """The transpose of `shear_x`: column x moves up by shear * (x + 0.5) pixels."""
    shear = tf.cast(shear, tf.float32)
    return _affine(image, (1.0, 0.0, 0.0), (shear, 1.0, shear / 2.0), "BILINEAR")


def translate_x(image, pixels):
    """Moves the content right by `pixels` (negative: left)."""
    return _affine(image, (1.0, 0.0, -tf.cast(pixels, tf.float32)), (0.0, 1.0, 0.0), "NEAREST")


def translate_y(image, pixels):
    """Moves the content down by `pixels` (negative: up)."""
    return _affine(image, (1.0, 0.0, 0.0), (0.0, 1.0, -tf.cast(pixels, tf.float32)), "NEAREST")


def rotate(image, degrees):
    """Rotates counter-clockwise by `degrees` about the image centre.  Nearest neighbour."""
    angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    shape = tf.cast(tf.shape(image), tf.float32)
    cy, cx = (shape[0] - 1.0) / 2.0, (shape[1] - 1.0) / 2.0
    row_x = (cos, -sin, cx - cos * cx + sin * cy)
    row_y = (sin, cos, cy - sin * cx - cos * cy)
    return _affine(image, row_x, row_y, "NEAREST")


# --------------------------------------------------------------------------
# The policy


def _shift(level, size):
    """A translate level (fraction of the side) in whole pixels of a side of `size`."""
    return tf.round(level * tf.cast(size, tf.float32))


# Each operation at a (signed) level from LEVELS.
_AT_LEVEL = {
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": lambda image, level: translate_x(image, _shift(level, tf.shape(image)[1])),
    "translate_y": lambda image, level: translate_y(image, _shift(level, tf.shape(image)[0])),
    "rotate": rotate,
    "color": lambda image, level: color(image, 1.0 + level),
    "contrast": lambda image, level: contrast(image, 1.0 + level),
    "sharpness": lambda image, level: sharpness(image, 1.0 + level),
    "brightness": lambda image, level: brightness(image, 1.0 + level),
    "posterize": posterize,
    "solarize": solarize,
    "autocontrast": lambda image, level: autocontrast(image),
    "equalize": lambda image, level: equalize(image),
    "invert": lambda image, level: invert(image),
}
_IDENTITY = len(OPERATIONS)  # The branch index of a step that is not applied.


def check_policy(policy):
    """Raise ValueError unless `policy` is a non-empty table of two-step sub-policies."""
    if not policy:
        raise ValueError("an AutoAugment policy needs at least one sub-policy")
    for index, sub_policy in enumerate(policy):
        if len(sub_policy) != STEPS_PER_SUB_POLICY:
            raise ValueError(f"sub-policy {index} has {len(sub_policy)} steps, not 2")
        for name, probability, magnitude in sub_policy:
            if (name not in LEVELS or not 0.0 <= probability <= 1.0
                    or magnitude not in range(NUM_BINS)):
                step = (name, probability, magnitude)
                raise ValueError(f"sub-policy {index}: invalid step {step}")


def _policy_tables(policy):
    """(operation index, probability, level, signable) tensors of shape [N, 2]."""
    steps = [step for sub_policy in policy for step in sub_policy]
    shape = (len(policy), STEPS_PER_SUB_POLICY)

    def table(values, dtype):
        return tf.reshape(tf.constant(values, dtype), shape)

    return (table([OPERATIONS.index(n) for n, _, _ in steps], tf.int32),
            table([p for _, p, _ in steps], tf.float32),
            table([LEVELS[n][m] for n, _, m in steps], tf.float32),
            table([n in SIGNED for n, _, _ in steps], tf.bool))


def _run_step(image, operation, level):
    branches = [lambda name=name: to_levels(_AT_LEVEL[name](image, level)) for name in OPERATIONS]
    return tf.switch_case(operation, branches + [lambda: image])


def apply_policy(image, seed, policy=CIFAR10_POLICY):
    """One image through a random sub-policy of `policy` (default: CIFAR-10).

    image: [H, W, C] levels 0..255, uint8 or float (rounded to whole levels first);
    the result has its dtype and shape.  seed: shape-[2] integer tensor.
    """
    check_policy(policy)
    image = tf.convert_to_tensor(image)
    operations, probabilities, levels, signable = _policy_tables(policy)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 1 + 2 * STEPS_PER_SUB_POLICY))
    index = tf.random.stateless_uniform([], seeds[0], 0, len(policy), dtype=tf.int32)
    out = to_levels(image)
    for step in range(STEPS_PER_SUB_POLICY):
        apply_seed, sign_seed = seeds[1 + 2 * step], seeds[2 + 2 * step]
        applied = tf.random.stateless_uniform([], apply_seed) < probabilities[index, step]
        negate = signable[index, step] & (tf.random.stateless_uniform([], sign_seed) < 0.5)
        level = tf.where(negate, -levels[index, step], levels[index, step])
        operation = tf.where(applied, operations[index, step], _IDENTITY)
        out = _run_step(out, operation, level)
    return tf.ensure_shape(tf.cast(out, image.dtype), image.shape)
