"""Datasets for the DARTS search and for training a genotype: `--dataset` specs,
DARTS splits, tf.data pipelines.

Accepted specs (see `describe_specs`):

* ``digits``       scikit-learn's 1,797 real 8x8 grey digits; ships inside the
                   sklearn wheel, so it is the offline default.
* ``tfds:NAME``    a tensorflow-datasets dataset already prepared in a local
                   ``data_dir``. Nothing is ever downloaded.
* ``folder:PATH``  a class-per-folder image tree, optionally split into
                   ``train/`` and ``test/``.

DARTS protocol: the source's train split is halved. The first half
("search-train") trains the network weights, the second half ("search-val")
trains the architecture parameters. The test split is only for reporting.
`train_portion` moves the boundary (MSR-DARTS: the first 80 % train the
weights, the last 20 % only report accuracy).
Training a genotype from scratch (`load_train_data`) uses the whole train split
(with cutout if asked) and reports on the test split.

Every problem with the user's input raises `DataError` from `load_search_data`
before any pipeline is built, so the CLI can exit before writing output.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
import re
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from keras_darts.data import autoaugment, imagenet_aug
from keras_darts.errors import DataError

# Decoded by TensorFlow; by Pillow (a matplotlib dependency) where TF cannot, or not
# in every supported version.
TF_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
PILLOW_IMAGE_EXTENSIONS = (".webp", ".tif", ".tiff")
IMAGE_EXTENSIONS = TF_IMAGE_EXTENSIONS + PILLOW_IMAGE_EXTENSIONS
# How an image of another aspect ratio becomes size x size (--resize).
RESIZE_MODES = ("crop", "squash")

# digits has no official split: a fixed permutation keeps the test set stable
# across runs and seeds.
DIGITS_TEST_SIZE = 360
FOLDER_TEST_FRACTION = 0.1
FOLDER_DEFAULT_IMAGE_SIZE = 32
SPLIT_RNG_SEED = 0

# Mean/std estimated from at most this many search-train images: enough for
# stable per-channel statistics without reading a large dataset twice.
STATS_SAMPLE_SIZE = 5000

# Folder trees at most this big (decoded, float32) are held in memory, so
# each file is decoded only once (during validation).
_MAX_IN_MEMORY_BYTES = 200 * 2**20
# Upper bound on the memory used by a shuffle buffer of decoded images.
_MAX_SHUFFLE_BYTES = 128 * 2**20

# The statistics the DARTS reference code uses for CIFAR-10.
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)

# Cutout's seed: the element's augmentation seed folded with this (crop and flip
# split the same seed, so the streams stay independent).
_CUTOUT_STREAM = 2

# The AutoAugment policy's seed: the element's augmentation seed folded with this.
_AUTOAUGMENT_STREAM = 3

# Training augmentations of `load_train_data`: DARTS's pad-and-crop + flip, the
# ImageNet recipe's random resized crop + flip + colour jitter, or crop_flip
# followed by the AutoAugment CIFAR-10 policy (docs/evaluation.md#autoaugment).
TRAIN_AUGMENTATIONS = ("crop_flip", "imagenet", "autoaugment")

# Mirroring a digit or letter makes a different (or no) symbol.
_NO_FLIP_TFDS = frozenset({"mnist", "emnist", "kmnist", "binarized_mnist", "svhn_cropped"})


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str  # the spec string, e.g. "digits", "tfds:cifar10", "folder:/x"
    image_shape: tuple  # (H, W, C) after resizing
    num_classes: int
    class_names: tuple  # strings
    num_search_train: int
    num_search_val: int
    num_test: int
    mean: tuple  # per channel, in [0, 1] pixel units
    std: tuple
    flip: bool

    @property
    def num_train(self) -> int:
        """Images of the whole train split (both search halves)."""
        return self.num_search_train + self.num_search_val

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict) -> "DatasetInfo":
        tuples = {k: tuple(data[k]) for k in ("image_shape", "class_names", "mean", "std")}
        return cls(**{**data, **tuples})


@dataclasses.dataclass(frozen=True)
class SearchData:
    info: DatasetInfo
    search_train: tf.data.Dataset  # infinite, batched, augmented
    search_val: tf.data.Dataset  # infinite, batched, augmented, own seed
    test: tf.data.Dataset  # finite, batched, not augmented
    search_val_eval: tf.data.Dataset  # finite, batched, not augmented
    # search_train_from(n) / search_val_from(n): the same streams without their
    # first n batches (where a resumed search continues), built without
    # computing the skipped batches.
    search_train_from: Callable[[int], tf.data.Dataset] = dataclasses.field(repr=False)
    search_val_from: Callable[[int], tf.data.Dataset] = dataclasses.field(repr=False)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.info.num_search_train // batch_size


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Pipelines for training a network from scratch (no search split)."""

    info: DatasetInfo
    train: tf.data.Dataset  # the train images: infinite, batched, augmented
    test: tf.data.Dataset  # what the network is evaluated on: finite, batched, not augmented
    # train_from(n): the same stream without its first n batches (a resumed run).
    train_from: Callable[[int], tf.data.Dataset] = dataclasses.field(repr=False)
    num_train: int = 0  # Images in `train`.
    # What `test` holds: "test" (the test split) or "validation" (the last
    # part of the train split, held out from `train`).
    evaluated_on: str = "test"

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.num_train // batch_size


@dataclasses.dataclass(frozen=True)
class _Splits:
    """What a source provides: unbatched (image float32 in [0, 1], label int32),
    sized as its `_Sizing` says; `image_shape` is the size the network sees."""

    search_train: tf.data.Dataset
    search_val: tf.data.Dataset
    test: tf.data.Dataset
    num_search_train: int
    num_search_val: int
    num_test: int
    image_shape: tuple
    class_names: tuple
    flip: bool
    # Published statistics to use instead of computing them (CIFAR-10).
    mean: tuple | None = None
    std: tuple | None = None


def describe_specs() -> str:
    return (
        "accepted --dataset forms: 'digits' (scikit-learn's 8x8 digits, offline), "
        "'tfds:NAME' (a tensorflow-datasets dataset prepared in --data_dir), "
        "'folder:PATH' (one subfolder of images per class, optionally inside train/ and test/)"
    )


def check_augmentation_sizes(side: int, crop_padding: int = -1, cutout: int = 0) -> None:
    """Raise DataError if the crop padding or the cutout square is larger than
    the `side` x `side` images: such a cutout zeroes every image (its square
    covers the image wherever its centre falls), such a padding crops mostly
    zeros."""
    for name, value in (("crop_padding", crop_padding), ("cutout", cutout)):
        if value > side:
            raise DataError(f"--{name}={value} is larger than the {side}x{side} images; "
                            f"use at most {side} (or --image_size to resize them)")


def check_image_size(height: int, num_reductions: int) -> None:
    """Raise DataError unless `height` survives `num_reductions` halvings.

    Each reduction cell halves the feature map, so the input must be at least
    2**num_reductions pixels high to leave a map of at least 1x1 at the end.
    """
    if num_reductions < 0:
        raise DataError(f"number of reduction cells must be >= 0, got {num_reductions}")
    needed = 2**num_reductions
    if height < needed:
        raise DataError(
            f"image size {height} is too small for {num_reductions} reduction cells: "
            f"each reduction halves the size, so images must be at least {needed} pixels. "
            f"Use a larger --image_size (>= {needed}) or fewer --layers."
        )


def load_search_data(
    spec: str,
    batch_size: int,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    crop_padding: int | None = None,
    eval_batch_size: int | None = None,
    train_portion: float = 0.5,
    resize: str = "crop",
) -> SearchData:
    """Validate `spec` and build the DARTS search pipelines for it.

    `train_portion`: the fraction of the train split (its first part) that
    becomes search-train; the rest is search-val.  `resize`: how images of
    another aspect ratio become square (RESIZE_MODES, `_resize`).
    """
    _check_arguments(batch_size, image_size, crop_padding, eval_batch_size, resize)
    if not 0.0 < train_portion < 1.0:
        raise DataError(f"--train_portion must be strictly between 0 and 1, got {train_portion!r}")
    splits = _load_splits(spec, data_dir, _Sizing(image_size, resize=resize), train_portion)
    _check_split_sizes(splits, batch_size)
    info = _dataset_info(spec, splits, splits.search_train)
    train_args = dict(batch_size=batch_size, seed=seed, info=info,
                      transform=_crop_flip(_crop_padding(crop_padding, info), info))
    eval_batch_size = eval_batch_size or batch_size
    train_from = functools.partial(_train_pipeline, splits.search_train,
                                   splits.num_search_train, stream=0, **train_args)
    val_from = functools.partial(_train_pipeline, splits.search_val, splits.num_search_val,
                                 stream=1, **train_args)
    return SearchData(
        info=info,
        search_train=train_from(0),
        search_val=val_from(0),
        test=_eval_pipeline(splits.test, eval_batch_size, info),
        search_val_eval=_eval_pipeline(splits.search_val, eval_batch_size, info),
        search_train_from=train_from,
        search_val_from=val_from,
    )


def load_train_data(
    spec: str,
    batch_size: int,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    crop_padding: int | None = None,
    cutout: int = 0,
    eval_batch_size: int | None = None,
    augmentation: str = "crop_flip",
    validation_portion: float = 0.0,
    resize: str = "crop",
) -> TrainData:
    """Validate `spec` and build the pipelines that train a network on the whole
    train split and test it on the test split.  Same sources and statistics
    rules as `load_search_data`.

    validation_portion > 0: train on the first 1 - validation_portion of the
    train split and evaluate on the rest (the search's search-val for
    --train_portion = 1 - validation_portion) instead of the test split: how
    architectures are compared without looking at the test set.

    augmentation: `crop_flip` (pad, random crop, flip where it fits),
    `imagenet` (the ImageNet recipe, `imagenet_aug`: train images keep their
    size until the random resized crop; test images are resized and
    centre-cropped) or `autoaugment` (crop_flip, then the AutoAugment CIFAR-10
    policy); then `cutout` (0: none) on the normalised images.
    """
    _check_arguments(batch_size, image_size, crop_padding, eval_batch_size, resize)
    if cutout < 0:
        raise DataError(f"cutout size must be >= 0, got {cutout!r}")
    if augmentation not in TRAIN_AUGMENTATIONS:
        raise DataError(f"--augmentation must be one of {list(TRAIN_AUGMENTATIONS)}, "
                        f"got {augmentation!r}")
    if not 0.0 <= validation_portion < 1.0:
        raise DataError(f"--validation_portion must be in [0, 1), got {validation_portion!r}")
    recipe = augmentation == "imagenet"
    if recipe and validation_portion:  # Held-out images would keep their native size.
        raise DataError("--validation_portion does not work with --augmentation=imagenet")
    sizing = _Sizing(image_size, native_train=recipe, resize=resize)
    if validation_portion:
        splits = _load_splits(spec, data_dir, sizing, train_portion=1.0 - validation_portion)
        train, num_train, evaluated = splits.search_train, splits.num_search_train, "validation"
        if splits.num_search_val < 1:
            raise DataError(f"--validation_portion={validation_portion} holds out no image of "
                            f"the {splits.num_search_train} in the train split")
    else:
        splits = _load_splits(spec, data_dir, sizing)
        train = splits.search_train.concatenate(splits.search_val)  # The halves, in order.
        num_train, evaluated = splits.num_search_train + splits.num_search_val, "test"
        _check_test_split(splits)
    if num_train < batch_size:
        raise DataError(f"the train split has only {num_train} images to train on but the "
                        f"batch size is {batch_size}; use a smaller --batch_size or more data")
    info = _dataset_info(spec, splits, train)
    if recipe:
        size = info.image_shape[0]
        transform = lambda image, s: imagenet_aug.train_transform(image, s, size, info.flip)
    elif augmentation == "autoaugment":
        transform = _crop_flip_autoaugment(_crop_padding(crop_padding, info), info)
    else:
        transform = _crop_flip(_crop_padding(crop_padding, info), info)
    train_from = functools.partial(_train_pipeline, train, num_train, batch_size=batch_size,
                                   seed=seed, stream=2, transform=transform, info=info,
                                   cutout_size=cutout)
    evaluation = splits.search_val if validation_portion else splits.test
    return TrainData(
        info=info,
        train=train_from(0),
        test=_eval_pipeline(evaluation, eval_batch_size or batch_size, info),
        train_from=train_from,
        num_train=num_train,
        evaluated_on=evaluated,
    )


def _dataset_info(spec, splits, stats_source) -> DatasetInfo:
    """The dataset's description; mean/std published, or measured on `stats_source`."""
    if splits.mean is not None:
        mean, std = splits.mean, splits.std
    else:
        # Train images of native size (ImageNet recipe) are resized to measure them.
        size = splits.image_shape[0]
        sized = stats_source.map(lambda x, y: (_resize(x, size), y))
        mean, std = _channel_stats(sized, splits.image_shape[-1])
    return DatasetInfo(
        name=spec,
        image_shape=tuple(splits.image_shape),
        num_classes=len(splits.class_names),
        class_names=tuple(splits.class_names),
        num_search_train=splits.num_search_train,
        num_search_val=splits.num_search_val,
        num_test=splits.num_test,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        flip=splits.flip,
    )


def _crop_padding(crop_padding, info):
    return crop_padding if crop_padding is not None else max(1, info.image_shape[0] // 8)


def _crop_flip(pad, info):
    """The DARTS augmentation as a pipeline transform: (image, seed) -> image."""
    return lambda image, seed: augment(image, seed, pad, info.flip)


def _crop_flip_autoaugment(pad, info):
    """crop_flip, then the AutoAugment policy on the image's 8-bit levels.  Its seed is
    folded off the element's, so the crop and flip equal those of `crop_flip`."""
    crop_flip = _crop_flip(pad, info)

    def transform(image, seed):
        policy_seed = tf.random.experimental.stateless_fold_in(seed, _AUTOAUGMENT_STREAM)
        levels = autoaugment.apply_policy(crop_flip(image, seed) * 255.0, policy_seed)
        return levels / 255.0

    return transform


# --------------------------------------------------------------------------
# Argument and spec checks


def _check_arguments(batch_size, image_size, crop_padding, eval_batch_size, resize):
    if resize not in RESIZE_MODES:
        raise DataError(f"--resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")
    if eval_batch_size is not None and eval_batch_size < 1:
        raise DataError(f"eval batch size must be a positive integer, got {eval_batch_size!r}")
    if image_size is not None and image_size < 1:
        raise DataError(f"--image_size must be a positive integer, got {image_size!r}")
    if crop_padding is not None and crop_padding < 0:
        raise DataError(f"crop padding must be >= 0, got {crop_padding!r}")


def _load_splits(spec, data_dir, sizing, train_portion=0.5) -> _Splits:
    spec_text = spec.strip() if isinstance(spec, str) else ""
    if spec_text == "digits":
        return _digits_splits(sizing, train_portion)
    kind, sep, arg = spec_text.partition(":")
    if sep and kind == "tfds":
        if not arg:
            raise DataError(
                f"'tfds:' needs a dataset name, e.g. 'tfds:cifar10'; {describe_specs()}")
        return _tfds_splits(arg, data_dir, sizing, train_portion)
    if sep and kind == "folder":
        if not arg:
            raise DataError(
                f"'folder:' needs a path, e.g. 'folder:/data/flowers'; {describe_specs()}")
        return _folder_splits(arg, sizing, train_portion)
    raise DataError(f"unknown dataset {spec!r}; {describe_specs()}")


def _check_split_sizes(splits: _Splits, batch_size: int) -> None:
    for name, count in (("search-train", splits.num_search_train),
                        ("search-val", splits.num_search_val)):
        if count < batch_size:
            raise DataError(
                f"{name} has only {count} images but the batch size is {batch_size} "
                f"(search-train {splits.num_search_train}, search-val {splits.num_search_val}: "
                "parts of the train split); use a smaller --batch_size or more data"
            )
    _check_test_split(splits)


def _check_test_split(splits: _Splits) -> None:
    if splits.num_test < 1:
        raise DataError("the test split is empty; the dataset needs at least one test image")


# --------------------------------------------------------------------------
# Sources. Each returns unbatched float32 images in [0, 1] with static shapes.


def _resize(image, image_size, mode="crop"):
    """Resize to image_size x image_size (None: keep) and pin the static shape.

    `crop` (the default) keeps the aspect ratio: the short side becomes
    `image_size` and the long side is centre-cropped; `squash` stretches the
    image to the square. Square images are the same either way."""
    channels = image.shape[-1]
    if image_size is None or tuple(image.shape[:2]) == (image_size, image_size):
        return image
    if mode == "crop":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = image_size / tf.reduce_min(shape)
        scaled = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), image_size)
        image = tf.image.resize(image, scaled, antialias=True)
        image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    else:
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
    # Bilinear/antialias filters overshoot slightly; keep pixels in [0, 1].
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (image_size, image_size, channels))


@dataclasses.dataclass(frozen=True)
class _Sizing:
    """How a source sizes its images.  Every split resized to `size` x `size`
    (None: the source's size), or with `native_train` (ImageNet recipe) train
    images left as they are (the augmentation crops and resizes them) and test
    images resized and centre-cropped to `size` x `size`."""

    size: int | None = None
    native_train: bool = False
    resize: str = "crop"  # RESIZE_MODES.

    def train(self, image, size):
        """One train image for a network input of `size` (the source's default size)."""
        return image if self.native_train else _resize(image, size, self.resize)

    def test(self, image, size):
        if self.native_train:
            return imagenet_aug.test_transform(image, size)
        return _resize(image, size, self.resize)


def _split_sizes(n, train_portion):
    """Sizes of (search-train, search-val) for a train split of n images:
    floor(n * train_portion) (0.5: n // 2), robust to float round-off."""
    n_train = math.floor(n * train_portion + 1e-9)
    return n_train, n - n_train


def _digits_splits(sizing, train_portion) -> _Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]  # 0..16 -> [0, 1]
    labels = digits.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_RNG_SEED).permutation(len(labels))
    train_idx, test_idx = order[:-DIGITS_TEST_SIZE], order[-DIGITS_TEST_SIZE:]
    n_train, n_val = _split_sizes(len(train_idx), train_portion)
    parts = (train_idx[:n_train], train_idx[n_train:], test_idx)

    size = sizing.size or images.shape[1]

    def dataset(idx, resize):
        ds = tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        return ds.map(lambda x, y: (resize(x, size), y))

    return _Splits(
        dataset(parts[0], sizing.train), dataset(parts[1], sizing.train),
        dataset(parts[2], sizing.test),
        num_search_train=n_train,
        num_search_val=n_val,
        num_test=len(test_idx),
        image_shape=(size, size, 1),
        class_names=tuple(str(name) for name in digits.target_names),
        flip=False,
    )


def _tfds_prepare_hint(name):
    return (
        f"Nothing is downloaded here. Prepare it on a machine with internet: "
        f"`tfds build {name} --data_dir=DIR`, copy DIR to this machine and pass --data_dir=DIR."
    )


def _tfds_builder(name, data_dir):
    """The builder for `name`, only if it is already prepared under `data_dir`."""
    if not data_dir:
        raise DataError(f"tfds:{name} needs --data_dir, the directory holding the prepared "
                        "dataset. " + _tfds_prepare_hint(name))
    if not os.path.isdir(data_dir):
        raise DataError(f"--data_dir {data_dir!r} does not exist or is not a directory. "
                        + _tfds_prepare_hint(name))
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as err:  # includes DatasetNotFoundError
        # The tfds message lists every known dataset; keep only its first line.
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"unknown tensorflow-datasets name {name!r} ({first_line})") from None
    # is_prepared() only looks for the metadata files; it never downloads.
    if not builder.is_prepared():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in --data_dir {data_dir!r} "
            f"(expected {builder.data_dir}). " + _tfds_prepare_hint(name)
        )
    return builder


def _tfds_splits(name, data_dir, sizing, train_portion) -> _Splits:
    builder = _tfds_builder(name, data_dir)
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2:
        raise DataError(f"tfds dataset {name!r} has no (image, label) supervised keys")
    image_feature, label_feature = info.features[keys[0]], info.features[keys[1]]
    image_shape = tuple(image_feature.shape)
    if len(image_shape) != 3 or image_shape[-1] is None:
        raise DataError(
            f"tfds dataset {name!r} is not an image dataset (feature shape {image_shape})")
    if not hasattr(label_feature, "num_classes"):
        raise DataError(f"tfds dataset {name!r} has no class labels to classify")
    if sizing.size is None and (None in image_shape[:2]
                                or (sizing.native_train and image_shape[0] != image_shape[1])):
        raise DataError(f"tfds dataset {name!r} has images of varying or non-square size; "
                        "pass --image_size")

    if "train" not in info.splits:
        raise DataError(
            f"tfds dataset {name!r} has no 'train' split (splits: {sorted(info.splits)})")
    test_split = next((s for s in ("test", "validation") if s in info.splits), None)
    if test_split is None:
        raise DataError(f"tfds dataset {name!r} has neither a 'test' nor a 'validation' split")

    height, width, channels = image_shape
    if sizing.size is not None:
        height = width = sizing.size
    elif sizing.native_train:  # Its test transform needs a size even for fixed-size sources.
        sizing = dataclasses.replace(sizing, size=height)

    def dataset(split, resize):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return ds.map(
            lambda x, y: (resize(tf.image.convert_image_dtype(x, tf.float32), sizing.size),
                          tf.cast(y, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    base_name = name.split("/")[0].split(":")[0]
    is_cifar10 = base_name == "cifar10"
    n_train, n_val = _split_sizes(info.splits["train"].num_examples, train_portion)
    is_imagenet = base_name.startswith("imagenet")
    return _Splits(
        dataset(f"train[:{n_train}]", sizing.train),
        dataset(f"train[{n_train}:]", sizing.train),
        dataset(test_split, sizing.test),
        num_search_train=n_train,
        num_search_val=n_val,
        num_test=info.splits[test_split].num_examples,
        image_shape=(height, width, channels),
        class_names=tuple(str(n) for n in label_feature.names),
        flip=base_name not in _NO_FLIP_TFDS,
        mean=CIFAR10_MEAN if is_cifar10 else imagenet_aug.MEAN if is_imagenet else None,
        std=CIFAR10_STD if is_cifar10 else imagenet_aug.STD if is_imagenet else None,
    )


def _list_class_tree(root):
    """(files, labels, class_names) of a class-per-folder tree, in sorted order.
    Files that are not images of IMAGE_EXTENSIONS are skipped with one warning."""
    classes = sorted(
        entry for entry in os.listdir(root)
        if not entry.startswith(".") and os.path.isdir(os.path.join(root, entry))
    )
    if not classes:
        raise DataError(
            f"no class subfolders in {root}: expected one subfolder of images per class")
    if len(classes) < 2:
        raise DataError(
            f"only one class ({classes[0]!r}) in {root}: need at least 2 class subfolders")
    files, labels, skipped = [], [], collections.Counter()
    for label, name in enumerate(classes):
        class_files = _image_files(os.path.join(root, name), skipped)
        if not class_files:
            raise DataError(f"class folder {os.path.join(root, name)} contains no images "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
        files += class_files
        labels += [label] * len(class_files)
    if skipped:
        logging.warning("%s: skipped %d files that are not images of a supported format (%s; "
                        "supported: %s)", root, sum(skipped.values()),
                        ", ".join(f"{ext or 'no extension'}: {n}" for ext, n in
                                  sorted(skipped.items())), ", ".join(IMAGE_EXTENSIONS))
    return files, np.array(labels, dtype=np.int32), tuple(classes)


def _image_files(directory, skipped):
    """The images under `directory` in sorted order; counts the other files'
    extensions in `skipped` (hidden files are ignored)."""
    found = []
    for parent, dirs, names in os.walk(directory):
        dirs.sort()  # os.walk order is arbitrary; sorting keeps splits reproducible
        for name in sorted(names):
            if name.startswith("."):
                continue
            extension = os.path.splitext(name)[1].lower()
            if extension in IMAGE_EXTENSIONS:
                found.append(os.path.join(parent, name))
            else:
                skipped[extension] += 1
    return found


def _pillow_decode(path):
    """uint8 [H, W, C] of an image TF cannot decode (WebP, TIFF), through Pillow."""
    from PIL import Image

    path = path.item() if isinstance(path, np.ndarray) else path  # From numpy_function.
    with Image.open(path.decode() if isinstance(path, bytes) else path) as image:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _decode_rgb(path):
    """The image file `path` (a string tensor) as float32 RGB [H, W, 3] in [0, 1].

    A transparent image is composited over black (colour times alpha), so what
    the network sees does not depend on the hidden colour of transparent pixels;
    a grey image is repeated over the three channels."""
    pillow = tf.strings.regex_full_match(
        tf.strings.lower(path), ".*(" + "|".join(re.escape(e) for e in
                                                 PILLOW_IMAGE_EXTENSIONS) + ")")
    image = tf.cond(
        pillow,
        lambda: tf.numpy_function(_pillow_decode, [path], tf.uint8, stateful=False),
        lambda: tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False))
    image = tf.image.convert_image_dtype(tf.ensure_shape(image, (None, None, None)), tf.float32)
    channels = tf.shape(image)[-1]
    colour = tf.cond(channels >= 3, lambda: image[..., :3],
                     lambda: tf.tile(image[..., :1], [1, 1, 3]))
    alpha = tf.cond(tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4)),
                    lambda: image[..., -1:], lambda: tf.ones_like(image[..., :1]))
    return tf.ensure_shape(colour * alpha, (None, None, 3))


def _decode_file(path):
    """Decode one image file eagerly; a bad file becomes a DataError naming it."""
    try:
        return _decode_rgb(tf.constant(path))
    except (tf.errors.OpError, ValueError, OSError) as err:
        raise DataError(f"cannot read image {path}: {_short_reason(err)}") from None


def _short_reason(err):
    """The readable part of a TF error ("Invalid PNG data, size 18")."""
    text = getattr(err, "message", None) or str(err)
    text = re.sub(r"\{\{.*?\}\}", "", text)  # drop "{{function_node ...}}"
    text = re.sub(r"\s*\[Op:.*", "", text, flags=re.S)  # drop "[Op:DecodeImage] ..."
    lines = text.strip().splitlines()
    return lines[0] if lines else "not a valid image file"


def _load_file(path, resize, image_size):
    return resize(_decode_rgb(path), image_size)


def _stratified_test_split(labels, fraction, rng):
    """(test indices, the rest shuffled): `fraction` of every class (at least one
    image of each class with two or more) goes to the test split, so a small or
    unbalanced tree keeps every class on both sides."""
    test, rest = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = max(1, int(len(members) * fraction)) if len(members) > 1 else 0
        test += list(members[:count])
        rest += list(members[count:])
    return np.sort(np.array(test, dtype=np.int64)), rng.permutation(np.array(rest, np.int64))


def _folder_splits(path, sizing, train_portion) -> _Splits:
    root = os.path.expanduser(path)
    if not os.path.exists(root):
        raise DataError(f"dataset folder {path} does not exist")
    if not os.path.isdir(root):
        raise DataError(f"dataset folder {path} is not a directory")

    rng = np.random.default_rng(SPLIT_RNG_SEED)
    train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train_dir) and os.path.isdir(test_dir):
        train_files, train_labels, classes = _list_class_tree(train_dir)
        test_files, test_labels, test_classes = _list_class_tree(test_dir)
        if test_classes != classes:
            raise DataError(f"train/ and test/ in {path} have different class folders: "
                            f"{list(classes)} vs {list(test_classes)}")
        # Files are listed class by class: shuffle so both halves see every class.
        order = rng.permutation(len(train_files))
    else:
        files, labels, classes = _list_class_tree(root)
        test_idx, order = _stratified_test_split(labels, FOLDER_TEST_FRACTION, rng)
        train_files, train_labels = files, labels
        test_files, test_labels = [files[i] for i in test_idx], labels[test_idx]

    n_train, n_val = _split_sizes(len(order), train_portion)
    part_idx = (order[:n_train], order[n_train:])
    parts = [([train_files[i] for i in idx], train_labels[idx]) for idx in part_idx]
    parts.append((list(test_files), np.asarray(test_labels)))

    size = sizing.size or FOLDER_DEFAULT_IMAGE_SIZE
    all_files = [f for part_files, _ in parts for f in part_files]
    # Native-size train images (ImageNet recipe) are decoded again for every use.
    in_memory = (not sizing.native_train
                 and len(all_files) * size * size * 3 * 4 <= _MAX_IN_MEMORY_BYTES)
    decoded = _decode_all(all_files, size if in_memory else None, sizing.resize)

    datasets, start = [], 0
    resizes = (sizing.train, sizing.train, sizing.test)
    for (part_files, part_labels), resize in zip(parts, resizes):
        if in_memory:
            images = decoded[start:start + len(part_files)]
            ds = tf.data.Dataset.from_tensor_slices((images, part_labels))
        else:
            ds = tf.data.Dataset.from_tensor_slices((part_files, part_labels)).map(
                lambda f, y, resize=resize: (_load_file(f, resize, size), y),
                num_parallel_calls=tf.data.AUTOTUNE)
        datasets.append(ds)
        start += len(part_files)
    return _Splits(
        *datasets,
        num_search_train=n_train,
        num_search_val=n_val,
        num_test=len(test_files),
        image_shape=(size, size, 3),
        class_names=classes,
        flip=True,
    )


def _decode_all(files, size, resize_mode):
    """Decodes every file once, in parallel through tf.data, so a corrupt one fails
    now (named: the files are then checked one by one to find it).  With `size`,
    returns the resized images as one float32 array [N, size, size, 3], so small
    trees are never decoded again; otherwise None."""
    start = time.time()
    paths = tf.data.Dataset.from_tensor_slices(files)
    if size:
        images = paths.map(lambda f: _resize(_decode_rgb(f), size, resize_mode),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # Only checked: the pipelines decode them again as they stream.
        images = paths.map(lambda f: tf.shape(_decode_rgb(f)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    try:
        batches = [batch.numpy() for batch in images.batch(256)]
    except (tf.errors.OpError, ValueError) as error:
        for path in files:  # Slow, only to name the bad file.
            _decode_file(path)
        raise DataError(f"cannot decode the images ({_short_reason(error)})") from None
    seconds = time.time() - start
    logging.info("decoded %d images in %.1f s (%.0f images/s)%s", len(files), seconds,
                 len(files) / max(seconds, 1e-9), f", held in memory at {size}x{size}"
                 if size else "")
    return np.concatenate(batches) if size else None


# --------------------------------------------------------------------------
# Statistics and pipelines


def _channel_stats(images_ds, channels, limit=STATS_SAMPLE_SIZE):
    """Per-channel mean/std over the first `limit` images of a dataset."""
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for images, _ in images_ds.take(limit).batch(512):
        pixels = images.numpy().astype(np.float64).reshape(-1, channels)
        total += pixels.sum(axis=0)
        total_sq += np.square(pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    # A constant channel would divide by zero; leaving it unscaled is harmless.
    std = np.where(std < 1e-6, 1.0, std)
    return tuple(mean), tuple(std)


def augment(image, seed, pad, flip):
    """DARTS training augmentation for one image in [0, 1] pixel units.

    Zero-pad by `pad` pixels and randomly crop back to the original size, then
    (if `flip`) randomly mirror left-right. `seed` is a shape-[2] integer
    tensor; the same seed always gives the same result (stateless ops).
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if pad > 0:
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        image = tf.image.stateless_random_crop(padded, size=tf.shape(image), seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image


def cutout(image, seed, size):
    """Zeroes a `size` x `size` square of one image, all channels (docs/evaluation.md#cutout
    sect. 5): its centre is a uniform random pixel and it is clipped at the
    borders, so it may cover less.  Applied after normalisation, as in the
    reference.  `seed`: a shape-[2] integer tensor (stateless)."""
    height, width = image.shape[0], image.shape[1]
    y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform([], y_seed, 0, height, dtype=tf.int32)
    x = tf.random.stateless_uniform([], x_seed, 0, width, dtype=tf.int32)
    half = size // 2
    rows = tf.range(height)
    cols = tf.range(width)
    in_rows = (rows >= y - half) & (rows < y + half)
    in_cols = (cols >= x - half) & (cols < x + half)
    square = tf.logical_and(in_rows[:, None], in_cols[None, :])
    return image * tf.cast(~square, image.dtype)[:, :, None]


def _normalize(image, info: DatasetInfo):
    return (image - tf.constant(info.mean, tf.float32)) / tf.constant(info.std, tf.float32)


def _stream_seeds(seed, stream):
    """Independent (shuffle seed, augmentation seed) for one pipeline of a run."""
    state = np.random.SeedSequence([seed, stream]).generate_state(3, dtype=np.uint32)
    return int(state[0]), tf.constant(state[1:].astype(np.int64))


def _finish(ds):
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _reshuffled_forever(ds, buffer, seed, first_epoch=0):
    """Repeat `ds` forever in a new seeded order each epoch, from `first_epoch`.

    Unlike `shuffle(reshuffle_each_iteration=True).repeat()`, whose order
    changes with every new iterator over the same dataset object, every
    iterator here replays the same sequence: epoch e is shuffled with seed + e.
    """

    def epoch(index):
        # The order must depend on `seed` alone: with a global seed set (e.g. by
        # keras.utils.set_random_seed) tf.data would mix it in, and its seed check
        # cannot handle the tensor seed used here.  This graph is the flat_map
        # function's own, so clearing its seed affects nothing else.
        tf.compat.v1.get_default_graph().seed = None
        return ds.shuffle(buffer, seed=seed + index, reshuffle_each_iteration=False)

    forever = tf.data.Dataset.counter(start=first_epoch).flat_map(epoch)
    return forever.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def _train_pipeline(ds, count, start_batch=0, *, batch_size, seed, stream, transform, info,
                    cutout_size=0):
    """The infinite augmented batch stream, from batch `start_batch` on.

    transform(image, seed) -> the augmented image of `info.image_shape`.
    """
    shuffle_seed, aug_seed = _stream_seeds(seed, stream)
    image_bytes = 4 * int(np.prod(info.image_shape))
    buffer = max(1, min(count, _MAX_SHUFFLE_BYTES // image_bytes))
    shape = info.image_shape

    def prepare(index, example):
        image, label = example
        # One seed per element (the running index never repeats across epochs),
        # so the augmentation is random per step but fixed given `seed`.
        element_seed = tf.random.experimental.stateless_fold_in(aug_seed, index)
        image = tf.ensure_shape(transform(image, element_seed), shape)
        image = _normalize(image, info)
        if cutout_size:
            cutout_seed = tf.random.experimental.stateless_fold_in(element_seed, _CUTOUT_STREAM)
            image = cutout(image, cutout_seed, cutout_size)
        return image, label

    # Element i of the stream is element i % count of epoch i // count's order.
    first_epoch, offset = divmod(start_batch * batch_size, count)
    ds = _reshuffled_forever(ds, buffer, shuffle_seed, first_epoch)
    ds = ds.enumerate(start=first_epoch * count).skip(offset)  # Skipped before `prepare`.
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds.batch(batch_size, drop_remainder=True))


def _eval_pipeline(ds, batch_size, info):
    ds = ds.map(lambda x, y: (_normalize(x, info), y), num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds.batch(batch_size, drop_remainder=False))
