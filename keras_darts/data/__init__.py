"""Datasets and input pipelines (`datasets.py`: digits, tfds from a local
data_dir, class-per-folder trees; the search and training streams, augmentation)
the ImageNet recipe's augmentation (`imagenet_aug.py`) and the AutoAugment
CIFAR-10 policy (`autoaugment.py`)."""

from keras_darts.data.datasets import (DIGITS_TEST_SIZE, RESIZE_MODES,  # noqa: F401
                                       TRAIN_AUGMENTATIONS,
                                       DatasetInfo, SearchData, TrainData, augment,
                                       check_augmentation_sizes, check_image_size, cutout,
                                       describe_specs, load_search_data,
                                       load_train_data)
