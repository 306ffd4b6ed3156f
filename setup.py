"""keras_darts: differentiable architecture search (DARTS family) in Keras 3 / TF 2."""

from setuptools import find_packages, setup

setup(
    name="keras_darts",
    version="0.1.0",
    description="Differentiable neural architecture search (DARTS family) in TensorFlow 2 / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_darts", "keras_darts.*"]),
    # The flag files (a link to flags/ in a checkout) ship inside the package, so
    # `keras-darts search --flagfile=quickstart` works after a plain pip install.
    package_data={"keras_darts": ["flagfiles/*.cfg"]},
    entry_points={"console_scripts": ["keras-darts=keras_darts.cli.main:main"]},
    python_requires=">=3.10",
    install_requires=[
        # The floors are tested: .ci/run's second stage installs .ci/oldest.txt.
        "tensorflow>=2.21,<3",
        # TF 2.21 needs >= 3.12; keras.Variable adopts a tf.Variable since 3.10 (reuse.py).
        "keras>=3.12,<4",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.x imports it undeclared (docs/tensorflow_notes.md#install).
        "importlib_resources",
        "numpy>=1.26",
        "absl-py",
        # TF 2.21 no longer pulls TensorBoard in.
        "tensorboard",
        # The offline default dataset: the 1,797 real 8x8 digits inside its wheel.
        "scikit-learn",
        # TensorBoard pictures: alpha heatmaps and drawn cells.
        "matplotlib",
        # WebP and TIFF images of folder datasets (matplotlib needs it anyway).
        "pillow",
        # Kendall's tau-b and Spearman's rho of tools/rank_correlation.py (scikit-learn
        # needs it anyway).
        "scipy",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3"],
        # A CUDA machine: the wheel that bundles CUDA and cuDNN.
        "gpu": ["tensorflow[and-cuda]>=2.21,<3"],
    },
)
