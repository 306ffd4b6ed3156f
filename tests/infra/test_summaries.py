"""Tests for keras_darts.summaries: pictures, markdown and the TensorBoard writer."""

import glob
import json
import re

import numpy as np
import pytest
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg

from keras_darts.infra import summaries
from keras_darts.space import published
from keras_darts.space.genotype import DARTS_V2, Genotype, from_json_dict

PRIMITIVES = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
              "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]

TWO_NODES = from_json_dict(
    {"normal": [["sep_conv_3x3", 0], ["skip_connect", 1], ["max_pool_3x3", 2], ["sep_conv_5x5", 0]],
     "normal_concat": [2, 3],
     "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 0], ["skip_connect", 1]],
     "reduce_concat": [2, 3]},
    known_ops=PRIMITIVES)


def _softmax_rows(num_edges, num_ops, seed=0):
    logits = np.random.default_rng(seed).normal(size=(num_edges, num_ops))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def _assert_picture(image):
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # Not a flat colour.


# --------------------------------------------------------------------------- edge naming


def test_edge_labels_follow_alpha_row_order():
    labels = summaries.edge_labels(14)
    assert labels[:5] == ["n0<-c_{k-2}", "n0<-c_{k-1}", "n1<-c_{k-2}", "n1<-c_{k-1}", "n1<-n0"]
    assert labels[9:] == ["n3<-c_{k-2}", "n3<-c_{k-1}", "n3<-n0", "n3<-n1", "n3<-n2"]


@pytest.mark.parametrize("edges,nodes", [(2, 1), (5, 2), (9, 3), (14, 4), (20, 5)])
def test_num_nodes_for_edges(edges, nodes):
    assert summaries.num_nodes_for_edges(edges) == nodes


@pytest.mark.parametrize("edges", [0, 1, 3, 4, 13, 15])
def test_num_nodes_for_edges_rejects_partial_nodes(edges):
    with pytest.raises(ValueError, match="whole number of nodes"):
        summaries.num_nodes_for_edges(edges)


# --------------------------------------------------------------------------- alpha heatmap


def test_heatmap_full_search_space():
    _assert_picture(summaries.alpha_heatmap(_softmax_rows(14, 8), PRIMITIVES, "normal"))


def test_heatmap_tiny_and_from_tensor():
    probs = tf.constant(_softmax_rows(5, 3), dtype=tf.float32)
    _assert_picture(summaries.alpha_heatmap(probs, PRIMITIVES[:3], "tiny"))


@pytest.mark.parametrize("shape,primitives,message", [
    ((4, 3), PRIMITIVES[:3], "whole number of nodes"),
    ((15, 8), PRIMITIVES, "whole number of nodes"),
    ((14, 8), PRIMITIVES[:7], "primitives"),
    ((14,), PRIMITIVES, "2-D"),
])
def test_heatmap_rejects_bad_shapes(shape, primitives, message):
    with pytest.raises(ValueError, match=message):
        summaries.alpha_heatmap(np.full(shape, 0.1), primitives)


# --------------------------------------------------------------------------- genotype picture


@pytest.mark.parametrize("genotype", [DARTS_V2, TWO_NODES], ids=["darts_v2", "two_nodes"])
def test_genotype_image(genotype):
    image = summaries.genotype_image(genotype)
    _assert_picture(image)
    assert image.shape[1] > image.shape[0]  # Two panels side by side.


def test_genotype_image_with_repeated_edge_and_input_in_concat():
    # Both edges of a node from the same input, and a cell input in concat:
    # drawing must still work (the two arrows get different curvatures).
    genotype = Genotype(normal=(("skip_connect", 1), ("sep_conv_3x3", 1)), normal_concat=(1, 2),
                        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 0)), reduce_concat=(2,))
    _assert_picture(summaries.genotype_image(genotype))


def _outside(box, panel, slack=1.0):
    """Whether display-space `box` pokes out of `panel` by more than `slack` pixels."""
    return (box.x0 < panel.x0 - slack or box.y0 < panel.y0 - slack
            or box.x1 > panel.x1 + slack or box.y1 > panel.y1 + slack)


@pytest.mark.parametrize("name", published.names())
def test_every_arrow_and_label_of_a_published_cell_is_inside_its_panel(name):
    # An arc that bows past the outermost node (an edge from c_{k-1} under the
    # quickstart's normal cell) was cut off with its label.
    fig = summaries.genotype_figure(published.REGISTRY[name].genotype)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    checked = 0
    for ax in fig.axes:
        panel = ax.get_window_extent(renderer)
        for artist in ax.patches + ax.texts:
            box = artist.get_window_extent(renderer)
            assert not _outside(box, panel), (name, ax.get_title(), artist, box, panel)
            checked += 1
    assert checked > 30  # Nodes, arrows and labels of both cells were all looked at.


# --------------------------------------------------------------------------- markdown


def test_markdown_lists_every_edge_and_the_json():
    text = summaries.genotype_markdown(DARTS_V2)
    for cell in ("normal", "reduce"):
        for op, _ in getattr(DARTS_V2, cell):
            assert f"`{op}`" in text
    assert "normal cell" in text and "reduction cell" in text
    assert "| n3 | `n0` | `dil_conv_3x3` |" in text
    data = json.loads(re.search(r"```json\n(.*)\n```", text, re.S).group(1))
    assert from_json_dict(data, known_ops=PRIMITIVES) == DARTS_V2


# --------------------------------------------------------------------------- writer


def _read_events(logdir):
    """{tag: [(step, value)]}: scalars as floats, text as str, images as PNG [w, h, png]."""
    events = {}
    for path in glob.glob(f"{logdir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if array.dtype == object and array.ndim == 0:
                    array = array.item().decode("utf-8", "replace")  # Protos stay bytes-ish.
                events.setdefault(value.tag, []).append((event.step, array))
    return events


def test_epoch_writer_writes_all_tags(tmp_path):
    probs = {"normal": _softmax_rows(14, 8, seed=1), "reduce": _softmax_rows(14, 8, seed=2)}
    with summaries.EpochWriter(tmp_path) as writer:
        for step in (0, 1):
            writer.scalars(step, {"loss/train": 1.5 - step, "accuracy/val": np.float32(0.25)})
        writer.alphas(1, probs, PRIMITIVES)
        writer.genotype(1, DARTS_V2)
        writer.text(3, "comparison/table", "| a | b |\n|---|---|\n| 1 | 2 |\n")
        writer.flush()

    events = _read_events(tmp_path)
    assert {"loss/train", "accuracy/val", "alphas/normal", "alphas/reduce",
            "genotype/text", "genotype/cells"} <= set(events)
    assert [(step, float(v)) for step, v in events["loss/train"]] == [(0, 1.5), (1, 0.5)]
    assert float(events["accuracy/val"][0][1]) == pytest.approx(0.25)
    [(step, text)] = events["genotype/text"]
    assert step == 1 and "dil_conv_3x3" in text
    assert events["comparison/table"] == [(3, "| a | b |\n|---|---|\n| 1 | 2 |\n")]
    for tag in ("alphas/normal", "genotype/cells"):
        [(step, image)] = events[tag]
        width, height = int(image[0]), int(image[1])
        decoded = tf.io.decode_png(image[2]).numpy()
        assert step == 1 and decoded.shape == (height, width, 3) and width > 100


def test_nothing_is_written_until_flush_and_an_error_drops_the_uncommitted(tmp_path):
    with summaries.EpochWriter(tmp_path / "a") as writer:
        writer.scalars(1, {"loss": 1.0})
        assert "loss" not in _read_events(tmp_path / "a")  # Recorded, not written.
        writer.flush()  # What RunLoop.save does after the checkpoint.
        assert "loss" in _read_events(tmp_path / "a")
    with pytest.raises(RuntimeError):
        with summaries.EpochWriter(tmp_path / "b") as writer:
            writer.scalars(1, {"committed": 1.0})
            writer.flush()
            writer.scalars(2, {"lost": 2.0})  # No checkpoint holds step 2.
            raise RuntimeError("crash before the checkpoint")
    assert {"committed"} <= set(_read_events(tmp_path / "b")) and \
        "lost" not in _read_events(tmp_path / "b")


def test_trajectories_config_and_hparams_are_written(tmp_path):
    probs = {"normal": _softmax_rows(5, 8, seed=1), "reduce": _softmax_rows(5, 8, seed=2)}
    with summaries.EpochWriter(tmp_path) as writer:
        writer.trajectory_layout(["normal", "reduce"], 5)
        writer.alpha_trajectories(1, probs, PRIMITIVES)
        writer.config_text(0, {"w_lr": 0.025, "method_settings": {"edas_tau": 1.0}})
        writer.hparams(1, {"w_lr": 0.025, "genotype": {"normal": [["skip_connect", 0]]}},
                       ["eval/test_accuracy"], trial="run")
    events = _read_events(tmp_path)
    tag = "alpha_trajectory/normal/02_n1<-c(k-2)/sep_conv_3x3"
    assert float(events[tag][0][1]) == pytest.approx(probs["normal"][2][4])
    assert len([t for t in events if t.startswith("alpha_trajectory/")]) == 2 * 5 * 8
    [(_, config)] = events["config"]
    assert "| `method_settings.edas_tau` | `1.0` |" in config
    assert {"_hparams_/experiment", "_hparams_/session_start_info",
            "custom_scalars__config__"} <= set(events)
