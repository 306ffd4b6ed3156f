"""Tests for keras_darts.data: specs, DARTS splits, pipelines and input errors."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_darts.data import datasets as data
from keras_darts.errors import DataError


def first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def count_examples(ds):
    return sum(int(labels.shape[0]) for _, labels in ds)


# --------------------------------------------------------------------------
# digits


# One worker builds the module fixture below for all of this module's tests.
pytestmark = pytest.mark.xdist_group("test_data")


@pytest.fixture(scope="module")
def digits():
    return data.load_search_data("digits", 32, seed=0)


def test_digits_info(digits):
    info = digits.info
    assert info.name == "digits"
    assert info.image_shape == (8, 8, 1)
    assert info.num_classes == 10
    assert info.class_names == tuple(str(i) for i in range(10))
    assert info.num_test == 360
    assert info.num_search_train + info.num_search_val + info.num_test == 1797
    assert abs(info.num_search_train - info.num_search_val) <= 1
    assert info.flip is False
    assert len(info.mean) == len(info.std) == 1
    assert digits.steps_per_epoch(32) == info.num_search_train // 32


def test_digits_batches(digits):
    images, labels = first_batch(digits.search_train)
    assert images.shape == (32, 8, 8, 1) and images.dtype == np.float32
    assert labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() < 10
    assert abs(images.mean()) < 0.5  # normalised with the search-train statistics
    val_images, _ = first_batch(digits.search_val)
    assert val_images.shape == (32, 8, 8, 1)
    assert not np.array_equal(images, val_images)


def test_digits_eval_pipelines_are_finite_and_complete(digits):
    assert count_examples(digits.test) == 360
    assert count_examples(digits.search_val_eval) == digits.info.num_search_val
    # No augmentation: reading the test set twice gives the same images.
    np.testing.assert_array_equal(first_batch(digits.test)[0], first_batch(digits.test)[0])


def test_digits_seeded_determinism(digits):
    same = data.load_search_data("digits", 32, seed=0)
    other = data.load_search_data("digits", 32, seed=1)
    a_images, a_labels = first_batch(digits.search_train)
    b_images, b_labels = first_batch(same.search_train)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(a_images, first_batch(other.search_train)[0])


def test_digits_resize_and_batch_size_checks():
    resized = data.load_search_data("digits", 8, image_size=16, eval_batch_size=100)
    assert resized.info.image_shape == (16, 16, 1)
    assert first_batch(resized.search_train)[0].shape == (8, 16, 16, 1)
    assert first_batch(resized.test)[0].shape == (100, 16, 16, 1)
    with pytest.raises(DataError, match="batch size is 1000"):
        data.load_search_data("digits", 1000)


# --------------------------------------------------------------------------
# augmentation


def _shift_of(output, source):
    """(dy, dx) that maps source ids to output ids, checking it is one shift."""
    shifts = set()
    for y, x in zip(*np.nonzero(output)):
        sy, sx = np.argwhere(source == output[y, x])[0]
        shifts.add((y - sy, x - sx))
    assert len(shifts) == 1, f"content was not just translated: {shifts}"
    return shifts.pop()


def test_augment_crop_shifts_by_at_most_padding_and_never_flips():
    height, width, pad = 8, 8, 2
    # Every pixel holds a distinct id (0 is the padding), so we can track it.
    source = np.arange(1, height * width + 1, dtype=np.float32).reshape(height, width)
    image = tf.constant(source[..., None])
    shifts = set()
    for i in range(30):
        out = data.augment(image, tf.constant([7, i]), pad, flip=False).numpy()[..., 0]
        assert out.shape == (height, width)
        dy, dx = _shift_of(out, source)
        assert abs(dy) <= pad and abs(dx) <= pad
        shifts.add((dy, dx))
    assert len(shifts) > 1  # the crop really is random
    again = data.augment(image, tf.constant([7, 3]), pad, flip=False)
    expected = data.augment(image, tf.constant([7, 3]), pad, flip=False)
    np.testing.assert_array_equal(again.numpy(), expected.numpy())


def test_augment_flip_mirrors_some_images():
    image = tf.constant(np.arange(16, dtype=np.float32).reshape(4, 4, 1))
    outputs = [data.augment(image, tf.constant([1, i]), 0, flip=True).numpy() for i in range(20)]
    mirrored = image.numpy()[:, ::-1]
    assert any(np.array_equal(o, mirrored) for o in outputs)
    assert any(np.array_equal(o, image.numpy()) for o in outputs)


# --------------------------------------------------------------------------
# check_image_size and specs


def test_check_image_size():
    data.check_image_size(8, 2)
    data.check_image_size(4, 2)
    with pytest.raises(DataError, match=r"image size 2 .*2 reduction.*--image_size"):
        data.check_image_size(2, 2)


def test_unknown_spec_lists_accepted_forms():
    with pytest.raises(DataError) as err:
        data.load_search_data("foo:bar", 4)
    message = str(err.value)
    assert "foo:bar" in message
    assert "digits" in message and "tfds:NAME" in message and "folder:PATH" in message
    assert "tfds:NAME" in data.describe_specs()


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 4, "image_size": 0},
                                    {"batch_size": 4, "crop_padding": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(DataError):
        data.load_search_data("digits", **kwargs)


# --------------------------------------------------------------------------
# folder


def write_image(path, size=(12, 12), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels.squeeze() if channels == 1 else pixels, mode).save(path)


def make_tree(root, classes=("cat", "dog", "eel"), per_class=6):
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(os.path.join(root, name, f"img{i}.png"), seed=c * 100 + i)
    return root


def test_folder_tree(tmp_path):
    root = make_tree(str(tmp_path / "pets"))
    # Odd size, odd extension and a greyscale image must all load as 3 channels.
    write_image(os.path.join(root, "dog", "wide.JPG"), size=(20, 10))
    write_image(os.path.join(root, "eel", "grey.png"), mode="L")
    with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
        f.write("not an image, ignored")
    loaded = data.load_search_data(f"folder:{root}", 4, image_size=16)
    info = loaded.info
    assert info.class_names == ("cat", "dog", "eel") and info.num_classes == 3
    assert info.image_shape == (16, 16, 3)
    assert info.num_test == 3  # 10 % of each class, at least one: 1 + 1 + 1 of 6 + 7 + 7.
    assert (info.num_search_train, info.num_search_val) == (8, 9)
    assert info.flip is True
    images, labels = first_batch(loaded.search_train)
    assert images.shape == (4, 16, 16, 3) and set(labels) <= {0, 1, 2}
    assert count_examples(loaded.test) == 3


def test_folder_default_size_and_streaming(tmp_path, monkeypatch):
    root = make_tree(str(tmp_path / "pets"), classes=("a", "b"))
    monkeypatch.setattr(data, "_MAX_IN_MEMORY_BYTES", 0)  # force the from-files path
    loaded = data.load_search_data(f"folder:{root}", 2)
    assert loaded.info.image_shape == (32, 32, 3)
    assert first_batch(loaded.search_val)[0].shape == (2, 32, 32, 3)
    assert count_examples(loaded.search_val_eval) == loaded.info.num_search_val


def test_folder_train_test_form(tmp_path):
    root = tmp_path / "split"
    make_tree(str(root / "train"), classes=("x", "y"), per_class=4)
    make_tree(str(root / "test"), classes=("x", "y"), per_class=3)
    info = data.load_search_data(f"folder:{root}", 2, image_size=8).info
    assert info.class_names == ("x", "y")
    assert (info.num_search_train, info.num_search_val, info.num_test) == (4, 4, 6)

    make_tree(str(root / "test"), classes=("z",), per_class=1)
    with pytest.raises(DataError, match="different class folders"):
        data.load_search_data(f"folder:{root}", 2)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_search_data(f"folder:{tmp_path / 'missing'}", 2)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        data.load_search_data(f"folder:{a_file}", 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        data.load_search_data(f"folder:{empty}", 2)
    single = make_tree(str(tmp_path / "single"), classes=("only",))
    with pytest.raises(DataError, match="at least 2"):
        data.load_search_data(f"folder:{single}", 2)
    no_images = tmp_path / "no_images"
    (no_images / "a").mkdir(parents=True)
    (no_images / "b").mkdir()
    with pytest.raises(DataError, match="contains no images"):
        data.load_search_data(f"folder:{no_images}", 2)


def test_folder_test_split_is_stratified_and_decoding_is_timed(tmp_path, caplog):
    root = str(tmp_path / "unbalanced")
    make_tree(os.path.join(root, "many"), classes=("a",), per_class=30)
    make_tree(os.path.join(root, "few"), classes=("b",), per_class=3)
    for name in ("notes.txt", "photo.heic"):  # Not images of a supported format.
        (tmp_path / "unbalanced" / "many" / "a" / name).write_text("x")
    # absl's own logger: another test in this process may have raised its level.
    with caplog.at_level("INFO", logger="absl"):
        loaded = data.load_search_data(f"folder:{root}", 2, image_size=8)
    labels = np.concatenate([y for _, y in loaded.test.as_numpy_iterator()])
    assert sorted(labels.tolist()) == [0, 1, 1, 1]  # One of b's 3 (label 0), 10 % of a's 30.
    assert "decoded 33 images in" in caplog.text
    assert "skipped 2 files" in caplog.text and ".heic: 1" in caplog.text


def _stripes(height, width):
    """float RGB: the left third red, the middle green, the right blue."""
    image = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        image[:, channel * width // 3:(channel + 1) * width // 3, channel] = 1.0
    return image


def test_non_square_images_are_centre_cropped_unless_squashed():
    wide = tf.constant(_stripes(10, 45))
    cropped = data._resize(wide, 8).numpy()
    squashed = data._resize(wide, 8, "squash").numpy()
    assert cropped.shape == squashed.shape == (8, 8, 3)
    assert cropped[..., 1].min() > 0.99 and cropped[..., [0, 2]].max() < 0.01  # Only green.
    assert squashed[:, 0, 0].min() > 0.9 and squashed[:, -1, 2].min() > 0.9  # All stripes.
    tall = data._resize(tf.constant(_stripes(10, 45).transpose(1, 0, 2)), 8).numpy()
    assert tall[..., 1].min() > 0.99


def test_transparent_pixels_are_black_and_webp_and_tiff_are_read(tmp_path):
    rgba = np.full((6, 8, 4), 255, np.uint8)
    rgba[:, :4, 3] = 0  # The left half is transparent (its hidden colour is white).
    for extension in ("png", "webp", "tif"):
        path = tmp_path / f"logo.{extension}"
        Image.fromarray(rgba, "RGBA").save(path, **({"lossless": True}
                                                     if extension == "webp" else {}))
        image = data._decode_file(str(path)).numpy()
        assert image.shape == (6, 8, 3), extension
        assert image[:, :4].max() == 0.0 and image[:, 4:].min() == 1.0, extension
    grey = tmp_path / "grey.tif"
    Image.fromarray(np.full((4, 4), 128, np.uint8), "L").save(grey)
    np.testing.assert_allclose(data._decode_file(str(grey)).numpy(), 128 / 255, rtol=1e-6)


def test_folder_corrupt_image_is_named(tmp_path):
    root = make_tree(str(tmp_path / "pets"), classes=("a", "b"))
    with open(os.path.join(root, "b", "x.png"), "wb") as f:
        f.write(b"garbage, not a png")
    with pytest.raises(DataError, match=r"x\.png"):
        data.load_search_data(f"folder:{root}", 2)


# --------------------------------------------------------------------------
# tfds (offline: metadata written by the test, examples from tfds.testing)


def fake_prepared_tfds(data_dir, name, num_train, num_test):
    """Write the metadata files that make `name` look prepared in data_dir."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name="train", shard_lengths=[num_train], num_bytes=0),
        tfds.core.SplitInfo(name="test", shard_lengths=[num_test], num_bytes=0),
    ]))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_tfds_from_local_data_dir(tmp_path, name):
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path)
    fake_prepared_tfds(data_dir, name, num_train=16, num_test=8)
    mock = tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_FILES,
                                  data_dir=data_dir)
    with mock:
        loaded = data.load_search_data(f"tfds:{name}", 4, data_dir=data_dir)
        images, labels = first_batch(loaded.search_train)
        test_count = count_examples(loaded.test)
    info = loaded.info
    channels = 3 if name == "cifar10" else 1
    size = 32 if name == "cifar10" else 28
    assert info.image_shape == (size, size, channels)
    assert images.shape == (4, size, size, channels) and images.dtype == np.float32
    assert labels.dtype == np.int32 and info.num_classes == 10
    assert (info.num_search_train, info.num_search_val, info.num_test) == (8, 8, 8)
    assert test_count == 8
    if name == "cifar10":
        assert info.mean == data.CIFAR10_MEAN and info.std == data.CIFAR10_STD and info.flip
    else:
        assert info.flip is False and len(info.mean) == 1


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(DataError, match=r"tfds build mnist --data_dir"):
        data.load_search_data("tfds:mnist", 4, data_dir=str(tmp_path))
    with pytest.raises(DataError, match="--data_dir"):
        data.load_search_data("tfds:mnist", 4)
    with pytest.raises(DataError, match="does not exist"):
        data.load_search_data("tfds:mnist", 4, data_dir=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="unknown tensorflow-datasets name"):
        data.load_search_data("tfds:no_such_dataset_xyz", 4, data_dir=str(tmp_path))


def test_every_iterator_replays_the_same_sequence(digits):
    # A trainer that re-creates its iterator (e.g. on resume) sees the same data.
    first = [first_batch(digits.search_val)[1] for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    assert digits.search_train.cardinality() == tf.data.INFINITE_CARDINALITY


def test_each_epoch_is_a_new_seeded_permutation():
    ds = data._reshuffled_forever(tf.data.Dataset.range(10), 10, seed=5)
    values = [int(v) for v in ds.take(30)]
    epochs = [values[i:i + 10] for i in (0, 10, 20)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1] or epochs[1] != epochs[2]
    again = data._reshuffled_forever(tf.data.Dataset.range(10), 10, seed=5)
    assert values == [int(v) for v in again.take(30)]


def test_order_ignores_the_global_seed():
    # The CLI seeds Keras/TF globally after loading data; tests seed before.
    # The data order must depend on `seed` alone either way.
    keras.utils.set_random_seed(0)
    a = first_batch(data.load_search_data("digits", 32, seed=3).search_train)[1]
    keras.utils.set_random_seed(123)
    b = first_batch(data.load_search_data("digits", 32, seed=3).search_train)[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("start", [3, 185])  # 185 x 8 crosses an epoch of every stream.
def test_streams_from_a_step_equal_the_streams_after_that_many_batches(start):
    """What resume relies on: stream_from(n) == the stream without its first n batches."""
    search = data.load_search_data("digits", 8, seed=3)
    train = data.load_train_data("digits", 8, seed=3, cutout=4)
    for full, skipped in ((search.search_train, search.search_train_from),
                          (search.search_val, search.search_val_from),
                          (train.train, train.train_from)):
        expected = list(full.skip(start).take(2))
        got = list(skipped(start).take(2))
        for (x_e, y_e), (x_g, y_g) in zip(expected, got):
            np.testing.assert_array_equal(x_g.numpy(), x_e.numpy())
            np.testing.assert_array_equal(y_g.numpy(), y_e.numpy())
    assert not np.array_equal(next(iter(train.train_from(start)))[0].numpy(),
                              next(iter(train.train))[0].numpy())
