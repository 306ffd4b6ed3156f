"""What every registered search method must do (a conformance test in the manner
of keras-hub's shared backbone tests): a tiny command-line search finishes with a
valid genotype of the method's op set; stopped by SIGTERM mid-epoch and resumed,
it writes byte-identical final alphas and genotype; it refuses what it does not
support with a clear error before anything is written.

A new method is covered by registering it: nothing here names one."""

import dataclasses
import os
import signal

import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from conftest import REPO, finish, signal_after_line, start_module, tiny_search_flags

from keras_darts import methods, ops
from keras_darts import settings as settings_lib
from keras_darts.cli import flags as cli_flags
from keras_darts.config import SearchConfig
from keras_darts.errors import ConfigError
from keras_darts.methods.base import ALL_STRATEGIES, CELL_FLAGS, SearchMethod
from keras_darts.runs.search_run import run_search
from keras_darts.space import genotype as genotype_lib
from keras_darts.space import hypercuboid

# recompute=none: 8x8 images need no memory saving, and the trace is shorter.
TINY = tiny_search_flags(epochs=3, recompute="none")
FINAL = ("alphas/epoch_003.json", "genotype.json")
# Tiny settings of methods whose defaults are too big for TINY (added after it).
METHOD_FLAGS = {"nao_v2": ["--layers=5", "--train_portion=0.8", "--nao_rounds=3",
                           "--nao_initial_pool=6", "--nao_new_archs=3", "--nao_seed_archs=3",
                           "--nao_score_batch=32", "--nao_controller_epochs=4",
                           "--nao_controller_batch=8", "--nao_embedding_size=4",
                           "--nao_expand=2", "--nao_rerank_top=1", "--nao_rerank_epochs=1"]}
METHODS = methods.names()
# Every method with its defaults, plus the plug-ins of another paper on top of
# one (sharpDARTS's op family, mixing rule and schedule on DARTS: extended, as
# the default run covers each of them in tests/ops, tests/test_schedules.py and
# the sharp mirrored step of tests/infra/test_distributed.py).
RUNS = [pytest.param(method, (), id=method) for method in METHODS] + [
    pytest.param("darts", ("--primitives=sharp", "--weighting=max_w",
                           "--w_lr_schedule=cosine_power", "--w_lr_warmup_epochs=1",
                           "--w_lr_min=1e-4"), id="darts-sharp", marks=pytest.mark.extended)]
cli_flags.define_search_flags()


def _tiny(method):
    """TINY without the cell-supernet flags for a method that searches no cells."""
    extra = METHOD_FLAGS.get(method, [])
    if methods.get(method).cell_supernet:
        return TINY + extra
    return [f for f in TINY if f.split("=")[0][2:] not in CELL_FLAGS] + extra


def _check_result(config, result):
    """A valid result of the method's space: a cell genotype of its op set and
    family with 2 nodes, or a grid path of its layers."""
    if hypercuboid.is_path(result):
        assert len(result.stages) == 2 * (config.layers // 2)
        return
    if not methods.get(config.method).cell_supernet:  # Its own space: valid in its family.
        genotype_lib.from_json_dict(result.to_json_dict())
        return
    genotype_lib.from_json_dict(result.to_json_dict(), known_ops=ops.op_set(config.primitives))
    assert result.op_family == ops.op_set_family(config.primitives)
    assert len(result.normal) == len(result.reduce) == 4  # 2 nodes x 2 pairs.


def _start(out, method, *extra):
    return start_module("keras_darts.search", *_tiny(method), f"--method={method}",
                        f"--output_dir={out}", *extra)


def _files(out):
    return [open(os.path.join(out, name), "rb").read() for name in FINAL]


@pytest.mark.slow
@pytest.mark.parametrize("method, extra", RUNS)
def test_tiny_search_finishes_and_resumes_bit_identically(tmp_path, method, extra):
    # The runs go side by side (the resume starts as soon as the interrupted run
    # stopped): CPU results do not depend on the load (one thread per op).
    reference = _start(tmp_path / "reference", method, *extra)
    interrupted = _start(tmp_path / "term", method, *extra)
    code, log = signal_after_line(interrupted, signal.SIGTERM, "epoch 2/3 step 1/3")
    assert code == 128 + signal.SIGTERM and "checkpoint saved" in log, log[-3000:]
    step = int(tf.train.load_checkpoint(str(tmp_path / "term" / "checkpoints")).get_tensor(
        "step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert step % 3 != 0, step  # Saved at the next step boundary, inside epoch 2.
    resumed = _start(tmp_path / "term", method, *extra, "--resume")
    code, err = finish(reference)
    assert code == 0, err[-3000:]
    config = SearchConfig.load_from_run(str(tmp_path / "reference"))
    assert config.method == method
    _check_result(config, genotype_lib.load(str(tmp_path / "reference" / "genotype.json")))
    code, err = finish(resumed)
    assert code == 0 and "resumed from" in err, err[-3000:]
    assert _files(tmp_path / "term") == _files(tmp_path / "reference")


def _parse(*args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["search", "--output_dir=/tmp/unused", *args])
    return cli_flags.to_search_config()


@pytest.mark.parametrize("method", METHODS)
def test_unsupported_strategies_are_refused(method):
    cls = methods.get(method)
    config = SearchConfig(output_dir="x", method=method, **cls.implied)
    for strategy in cls.strategies:
        cls(config).check(strategy)
    for strategy in set(ALL_STRATEGIES) - set(cls.strategies):
        with pytest.raises(ConfigError, match=f"--method={method}.*supports only --strategy"):
            cls(config).check(strategy)


@pytest.mark.parametrize("method", METHODS)
def test_settings_the_method_fixes_are_refused_otherwise(method):
    cls = methods.get(method)
    with flagsaver.flagsaver():
        assert _parse(f"--method={method}").method == method
        for field, value in cls.implied.items():
            other = next(v for v in flags.FLAGS[field].parser.enum_values if v != value)
            config = _parse(f"--method={method}", f"--{field}={other}")
            with pytest.raises(ConfigError, match=f"--method={method} needs --{field}={value}"):
                cls(config).check("default")


@pytest.mark.parametrize("method", [m for m in METHODS if not methods.get(m).cell_supernet])
def test_cell_flags_are_refused_without_cells(method):
    cls = methods.get(method)
    for name in CELL_FLAGS:
        config = SearchConfig(output_dir="x", method=method, **cls.implied)
        default = getattr(config, name)
        config = dataclasses.replace(config, **{name: default + 1 if isinstance(default, int)
                                                and not isinstance(default, bool) else "other"})
        with pytest.raises(ConfigError, match=f"--{name} does not apply to --method={method}"):
            cls(config).check("default")


def _non_default(field):
    """A valid flag value other than the field's default."""
    meta = field.metadata
    if meta["choices"]:
        return next(c for c in meta["choices"] if c != field.default)
    if meta["upper"] is not None:
        return meta["upper"]
    return field.default + 1


@pytest.mark.parametrize("method", METHODS)
def test_other_methods_flags_are_refused(method):
    own = {settings_lib.flag_name(f)
           for f in settings_lib.flagged_fields(methods.get(method).Settings)}
    with flagsaver.flagsaver():
        for other in METHODS:
            for field in settings_lib.flagged_fields(methods.get(other).Settings):
                flag = settings_lib.flag_name(field)
                if flag not in own:
                    with pytest.raises(ConfigError, match=f"--{flag} only applies to"):
                        _parse(f"--method={method}", f"--{flag}={_non_default(field)}")


def test_every_method_is_documented():
    for method in METHODS:
        assert methods.get(method).description, method
        assert os.path.exists(os.path.join(REPO, "docs", "methods", f"{method}.md")), method


class _Recorder(SearchMethod):
    """A method written outside the package: DARTS's default step, hooks recorded."""

    name = "conformance_recorder"
    description = "records the harness's calls"
    calls = []

    def start_epoch(self, epoch, epochs, fresh):
        super().start_epoch(epoch, epochs, fresh)
        self.calls.append(("start_epoch", epoch, fresh))

    def write_epoch(self, number, result, alphas_dir, writer):
        self.calls.append(("write_epoch", number))
        return super().write_epoch(number, result, alphas_dir, writer)

    def end_of_run(self, summary):
        self.calls.append(("end_of_run",))
        return {**summary, "recorded": len(self.calls)}


def test_a_method_module_is_all_it_takes(tmp_path):
    """A method registered from outside the package runs through the harness,
    which calls its hooks at the documented points."""
    methods.register(_Recorder)
    try:
        with pytest.raises(ValueError, match="already registered"):
            methods.register(_Recorder)
        config = SearchConfig(output_dir=str(tmp_path / "run"), method=_Recorder.name,
                              channels=4, layers=3, nodes=2, batch_size=16, steps_per_epoch=2,
                              eval_batch_size=256, epochs=2, log_every=0)
        summary = run_search(config)
    finally:
        methods._METHODS.remove(_Recorder.name)  # noqa: SLF001 (the test's own entry)
    assert _Recorder.calls == [("start_epoch", 0, True), ("write_epoch", 1),
                               ("start_epoch", 1, True), ("write_epoch", 2), ("end_of_run",)]
    assert summary["recorded"] == 5
    assert os.path.exists(tmp_path / "run" / "alphas" / "epoch_002.json")
