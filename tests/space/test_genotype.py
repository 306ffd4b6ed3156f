import json

import pytest
import tensorflow as tf

from keras_darts.errors import GenotypeError
from keras_darts.infra import fileio
from keras_darts.space import genotype as genotype_lib

DARTS_OPS = {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
             "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"}


def test_round_trip_through_file(tmp_path):
    path = tmp_path / "g.json"
    genotype_lib.save(genotype_lib.DARTS_V2, str(path))
    data = json.loads(path.read_text())
    assert set(data) == {"normal", "normal_concat", "reduce", "reduce_concat"}
    assert data["normal"][0] == ["sep_conv_3x3", 0] and len(data["reduce"]) == 8
    assert data["normal_concat"] == [2, 3, 4, 5]
    assert genotype_lib.load(str(path)) == genotype_lib.DARTS_V2


def test_published_v1_matches_spec():
    g = genotype_lib.DARTS_V1
    assert g.normal[-1] == ("skip_connect", 2) and g.reduce[-1] == ("avg_pool_3x3", 0)
    assert genotype_lib.PUBLISHED["DARTS"] is genotype_lib.DARTS_V2


def _valid():
    return genotype_lib.DARTS_V2.to_json_dict()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("reduce"), "missing key"),
    (lambda d: d.update(extra=1), "unknown key"),
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "unknown op 'conv_9x9'"),
    (lambda d: d["normal"].__setitem__(1, ["sep_conv_3x3", 2]), "input 2"),
    (lambda d: d["normal"].pop(), "pairs per node"),
    (lambda d: d["reduce"].__setitem__(0, "max_pool_3x3"), "[op_name, input_index]"),
    (lambda d: d.update(normal_concat=[2, 9]), "normal_concat"),
    (lambda d: d.update(reduce_concat=[2, 3, 3, 5]), "'reduce_concat' repeats a state index"),
    (lambda d: d.update(reduce=d["reduce"][:6], reduce_concat=[2, 3, 4]),
     "different numbers of nodes"),
])
def test_malformed_genotype_is_a_clear_error(mutate, message):
    data = _valid()
    mutate(data)
    with pytest.raises(GenotypeError) as err:
        genotype_lib.from_json_dict(data, known_ops=DARTS_OPS)
    assert message in str(err.value)


def test_malformed_file_names_the_path(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GenotypeError, match="bad.json: not valid JSON"):
        genotype_lib.load(str(bad))
    with pytest.raises(GenotypeError, match="not found"):
        genotype_lib.load(str(tmp_path / "missing.json"))
    locked = tmp_path / "locked.json"
    genotype_lib.save(genotype_lib.DARTS_V2, str(locked))
    real_gfile = fileio.gfile.GFile

    def no_permission(path, *args, **kwargs):  # As for a user without read permission.
        if str(path) == str(locked):
            raise tf.errors.PermissionDeniedError(None, None, "Permission denied")
        return real_gfile(path, *args, **kwargs)

    monkeypatch.setattr(fileio.gfile, "GFile", no_permission)
    with pytest.raises(GenotypeError, match="cannot read genotype file .*locked.json: "
                                            "Permission denied"):
        genotype_lib.load(str(locked))


def test_default_known_ops_are_the_registry():
    data = _valid()
    assert genotype_lib.from_json_dict(data) == genotype_lib.DARTS_V2


def test_one_line_text():
    assert genotype_lib.DARTS_V2.to_text() == (
        "normal [sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:0 sep_conv_3x3:1 sep_conv_3x3:1 "
        "skip_connect:0 skip_connect:0 dil_conv_3x3:2] reduce [max_pool_3x3:0 max_pool_3x3:1 "
        "skip_connect:2 max_pool_3x3:1 max_pool_3x3:0 skip_connect:2 skip_connect:2 "
        "max_pool_3x3:1]")
    partial = genotype_lib.Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)],
                                    normal_concat=[1, 2], reduce=[("max_pool_3x3", 0),
                                                                  ("max_pool_3x3", 1)],
                                    reduce_concat=[2])
    # Concat is shown only where it is not every intermediate node.
    assert partial.to_text() == ("normal [skip_connect:0 skip_connect:1] normal_concat [1, 2] "
                                 "reduce [max_pool_3x3:0 max_pool_3x3:1]")


def _sharp():
    from keras_darts.space import published

    return published.REGISTRY["SHARP_DARTS"].genotype


def test_op_family_round_trip_and_darts_files_unchanged(tmp_path):
    """A genotype of another op family carries it in the JSON; a DARTS genotype's
    file has no such key, and files without it load as DARTS genotypes."""
    sharp = _sharp()
    assert sharp.op_family == "sharp" and genotype_lib.DARTS_V2.op_family == "darts"
    path = tmp_path / "sharp.json"
    genotype_lib.save(sharp, str(path))
    assert json.loads(path.read_text())["op_family"] == "sharp"
    assert genotype_lib.load(str(path)) == sharp
    assert "op_family" not in genotype_lib.DARTS_V2.to_json()
    sharpsep = genotype_lib.load_genotype("SHARPSEPCONV_DARTS")  # Only DARTS op names.
    same_cells = genotype_lib.from_json_dict({k: v for k, v in sharpsep.to_json_dict().items()
                                              if k != "op_family"})
    assert same_cells.op_family == "darts" and same_cells != sharpsep  # Different layers.
    assert sharp.to_text().endswith("ops sharp")
    assert "ops" not in genotype_lib.DARTS_V2.to_text()


@pytest.mark.parametrize("family, message", [
    ("nope", "unknown op family 'nope'"),
    (3, "'op_family' must be a string"),
    ("darts", "unknown op 'choke_conv_3x3'"),  # A sharp-only op in a DARTS genotype.
])
def test_op_family_errors(family, message):
    data = dict(_sharp().to_json_dict(), op_family=family)
    with pytest.raises(GenotypeError, match=message):
        genotype_lib.from_json_dict(data)


def test_a_supernet_refuses_a_genotype_of_another_family():
    from keras_darts.space import plans
    from keras_darts.space.supernet import SearchNetwork

    net = SearchNetwork(3, channels=4, num_layers=3, input_shape=(8, 8, 1))
    with pytest.raises(GenotypeError, match="op family 'sharp', supernet of 'darts'"):
        plans.check_genotype(net, _sharp())
