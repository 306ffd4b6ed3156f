"""How well does a trained supernet rank architectures? (docs/rank_correlation.md)

  python tools/rank_correlation.py --checkpoint=RUN_DIR --num_archs=K \
      --standalone_epochs=E --output_dir=OUT [--seed=S] [--data_dir=DIR]

Restores the supernet of the search in RUN_DIR (only read), samples K random
architectures of the run's space and scores each inside the supernet, both as
the run's method does it (`SearchMethod.random_genotypes`, `.score_genotype`),
then trains each one stand-alone for E epochs at the search's size on the same
data (keras_darts/runs/standalone.py: search-train, scored on search-val) and
reports how the two rankings agree: Kendall's tau-b, pairwise accuracy and
Spearman's rho.  Writes OUT/candidates.json (flags, architectures, supernet
scores: before any training), OUT/standalone/arch_KKK/ (one training run each),
OUT/rank_correlation.csv, OUT/summary.json, OUT/scatter.png and TensorBoard
summaries in OUT/tensorboard.  A rerun with the same flags continues an
interrupted study: finished stand-alone runs are read back.
"""

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import app, logging  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded  # noqa: E402
from keras_darts.config import SearchConfig  # noqa: E402
from keras_darts.errors import ConfigError  # noqa: E402
from keras_darts.infra.fileio import atomic_write_text, write_json  # noqa: E402
from keras_darts.infra.summaries import EpochWriter  # noqa: E402
from keras_darts.methods.nao_v2.controller import pairwise_accuracy  # noqa: E402
from keras_darts.runs import standalone  # noqa: E402
from keras_darts.runs.search_run import SearchRun  # noqa: E402
from keras_darts.space import genotype as genotype_lib  # noqa: E402

PROGRAM = "rank_correlation"
CANDIDATES = "candidates.json"
COLUMNS = ("index", "genotype", "params", "supernet_score", "standalone_accuracy")
MIN_ARCHS = 3  # Fewer pairs say nothing about a ranking.
# The flags that define a study: a rerun must repeat them (--data_dir only
# locates the data).
STUDY_FLAGS = ("checkpoint", "num_archs", "standalone_epochs", "seed")


@dataclasses.dataclass(frozen=True)
class Study:
    """What one study is: its flags, as --flag: value."""

    checkpoint: str
    num_archs: int
    standalone_epochs: int
    seed: int = 0
    data_dir: str = ""

    def identity(self):
        values = {name: getattr(self, name) for name in STUDY_FLAGS}
        values["checkpoint"] = os.path.abspath(self.checkpoint)
        return values


# -- metrics ------------------------------------------------------------------------
def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


def ranking_metrics(supernet_scores, standalone_accuracies):
    """Agreement of the supernet's ranking with the stand-alone one: Kendall's
    tau-b (+ p-value), pairwise accuracy (ties in the stand-alone accuracy count
    as agreeing order, docs/methods/nao_v2.md#ranking-metrics) and Spearman's
    rho (+ p-value).  A constant list has no tau or rho: None."""
    x = np.asarray(supernet_scores, np.float64)
    y = np.asarray(standalone_accuracies, np.float64)
    with warnings.catch_warnings():  # Constant input: NaN, said by None below.
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y, variant="b")
        rho = stats.spearmanr(x, y)
    return {"kendall_tau": _finite_or_none(tau.statistic),
            "kendall_p_value": _finite_or_none(tau.pvalue),
            "pairwise_accuracy": pairwise_accuracy(y, x),
            "spearman_rho": _finite_or_none(rho.statistic),
            "spearman_p_value": _finite_or_none(rho.pvalue)}


def _fmt(value):
    return "n/a" if value is None else f"{value:.3f}"


# -- the output directory -----------------------------------------------------------
def _check_inputs(study):
    if study.num_archs < MIN_ARCHS:
        raise ConfigError(f"--num_archs={study.num_archs}: a ranking needs at least "
                          f"{MIN_ARCHS} architectures")
    if study.standalone_epochs < 1:
        raise ConfigError(f"--standalone_epochs={study.standalone_epochs}: train at least "
                          "one epoch")
    return SearchConfig.load_from_run(study.checkpoint)  # Raises for a missing run dir.


def _saved_candidates(study, output_dir):
    """The candidates.json of the study already in `output_dir` (None: a new
    study); refuses a directory holding something else or another study."""
    path = os.path.join(output_dir, CANDIDATES)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        for name, value in study.identity().items():
            old = saved["flags"].get(name)
            same = (os.path.realpath(old) == os.path.realpath(value) if name == "checkpoint"
                    else old == value)
            if not same:
                raise ConfigError(f"--output_dir {output_dir} holds a study with --{name}="
                                  f"{old}, not {value}; rerun with its flags to continue it, "
                                  "or choose another --output_dir")
        return saved
    if os.path.isfile(output_dir) or (os.path.isdir(output_dir) and os.listdir(output_dir)):
        raise ConfigError(f"--output_dir {output_dir} already holds files that are not a "
                          f"rank-correlation study (no {CANDIDATES}); choose a new or empty "
                          "directory")
    return None


def _sample_and_score(study, config, output_dir):
    """Restores the supernet, samples and scores the architectures, writes
    candidates.json; returns (its contents, the run's strategy: the stand-alone
    trainings reuse it, one strategy per process)."""
    start = time.time()
    run = SearchRun(config)
    checkpoint = run.restore_searched(study.checkpoint)
    method = run.method
    genotypes = method.random_genotypes(np.random.default_rng(study.seed), study.num_archs)
    logging.info("%s: %d architectures of --method=%s, scored in the supernet of %s",
                 PROGRAM, len(genotypes), config.method, checkpoint)
    candidates = []
    for i, genotype in enumerate(genotypes):
        score = method.score_genotype(run, genotype, i)
        candidates.append({"index": i, "genotype": genotype.to_json_dict(),
                           "supernet_score": score})
        logging.info("%s: supernet score %d/%d: %.4f  %s", PROGRAM, i + 1, len(genotypes),
                     score, genotype.to_text())
    saved = {"flags": study.identity(), "method": config.method,
             "run_checkpoint": os.path.basename(checkpoint),
             "image_side": int(min(run.data.info.image_shape[:2])),
             "scoring_seconds": round(time.time() - start, 1), "candidates": candidates}
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, CANDIDATES), saved)
    return saved, run.strategy


# -- outputs ------------------------------------------------------------------------
def csv_text(rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r[c] if isinstance(r[c], (int, str)) else repr(r[c]) for c in COLUMNS])
    return out.getvalue()


def scatter_image(rows, title):
    """The supernet score (x) against the stand-alone accuracy (y) of every
    row, labelled by index; returns (figure, uint8 RGB array)."""
    fig = Figure(figsize=(5.5, 4.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = [r["supernet_score"] for r in rows]
    y = [r["standalone_accuracy"] for r in rows]
    ax.scatter(x, y, s=24)
    for r in rows:
        ax.annotate(str(r["index"]), (r["supernet_score"], r["standalone_accuracy"]),
                    textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("supernet score")
    ax.set_ylabel("stand-alone accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    canvas.draw()
    return fig, np.asarray(canvas.buffer_rgba())[..., :3].copy()


def summary_markdown(summary):
    lines = ["| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary.items()]
    return "\n".join(lines) + "\n"


def _write_results(output_dir, summary, rows):
    write_json(os.path.join(output_dir, "summary.json"), summary)
    title = (f"{summary['method']}: K={summary['num_archs']}, E={summary['standalone_epochs']}"
             f", Kendall tau-b {_fmt(summary['kendall_tau'])}")
    fig, image = scatter_image(rows, title)
    fig.savefig(os.path.join(output_dir, "scatter.png"))
    metrics = {f"rank_correlation/{k}": summary[k] for k in
               ("kendall_tau", "pairwise_accuracy", "spearman_rho") if summary[k] is not None}
    with EpochWriter(os.path.join(output_dir, "tensorboard")) as writer:
        step = summary["standalone_epochs"]
        writer.image(step, "rank_correlation/scatter", image)
        writer.text(step, "rank_correlation/summary", summary_markdown(summary))
        writer.scalars(step, metrics)


# -- the study ----------------------------------------------------------------------
def run_study(study, output_dir):
    """Runs (or continues) `study` into `output_dir`; returns the summary dict."""
    start = time.time()
    saved_config = _check_inputs(study)
    saved = _saved_candidates(study, output_dir)
    # One process on this machine's devices (a cluster's run is studied locally).
    strategy = "auto" if saved_config.strategy == "multi_worker" else saved_config.strategy
    config = dataclasses.replace(saved_config, output_dir=output_dir, strategy=strategy,
                                 data_dir=study.data_dir or saved_config.data_dir)
    strategy = None  # The trainings' own, unless the scoring made one.
    if saved is None:
        saved, strategy = _sample_and_score(study, config, output_dir)
    else:
        logging.info("%s: continuing the study in %s", PROGRAM, output_dir)
    rows, trained_seconds, trained = [], 0.0, 0
    candidates = saved["candidates"]
    for c in candidates:
        i = c["index"]
        genotype = genotype_lib.from_json_dict(c["genotype"])
        arch_dir = os.path.join(output_dir, "standalone", f"arch_{i:03d}")
        arch_start = time.time()
        finished = os.path.exists(os.path.join(arch_dir, "results.json"))
        train_config = standalone.standalone_config(config, arch_dir, study.standalone_epochs,
                                                    saved["image_side"])
        results = standalone.train_standalone(genotype, train_config, strategy)
        rows.append({"index": i, "genotype": genotype.to_text(),
                     "params": int(results["weight_params"]),
                     "supernet_score": float(c["supernet_score"]),
                     "standalone_accuracy": float(results["validation_accuracy"])})
        atomic_write_text(os.path.join(output_dir, "rank_correlation.csv"), csv_text(rows))
        if finished:
            logging.info("%s: arch %d/%d already trained: accuracy %.4f", PROGRAM, i + 1,
                         len(candidates), rows[-1]["standalone_accuracy"])
            continue
        trained_seconds += time.time() - arch_start
        trained += 1
        left = sum(not os.path.exists(os.path.join(output_dir, "standalone", f"arch_{j:03d}",
                                                   "results.json"))
                   for j in range(i + 1, len(candidates)))
        logging.info("%s: arch %d/%d trained stand-alone in %.1f s: accuracy %.4f (supernet "
                     "score %.4f) | ETA %.0f s", PROGRAM, i + 1, len(candidates),
                     time.time() - arch_start, rows[-1]["standalone_accuracy"],
                     rows[-1]["supernet_score"], left * trained_seconds / trained)
    metrics = ranking_metrics([r["supernet_score"] for r in rows],
                              [r["standalone_accuracy"] for r in rows])
    summary = {"num_archs": study.num_archs, "standalone_epochs": study.standalone_epochs,
               "seed": study.seed, **metrics, "run_dir": os.path.abspath(study.checkpoint),
               "method": saved["method"], "seconds": round(time.time() - start, 1)}
    _write_results(output_dir, summary, rows)
    logging.info("%s: Kendall tau-b %s (p %s), pairwise accuracy %.3f, Spearman rho %s over "
                 "%d architectures; results in %s", PROGRAM, _fmt(summary["kendall_tau"]),
                 _fmt(summary["kendall_p_value"]), summary["pairwise_accuracy"],
                 _fmt(summary["spearman_rho"]), len(rows), output_dir)
    return summary


def main(argv):
    f = cli_flags.FLAGS
    study = Study(checkpoint=f.checkpoint, num_archs=f.num_archs,
                  standalone_epochs=f.standalone_epochs, seed=f.seed, data_dir=f.data_dir or "")
    run_guarded(PROGRAM, argv, lambda: run_study(study, f.output_dir),
                lambda: f"{f.checkpoint} is unchanged; rerun the same command to continue "
                        f"the study in {f.output_dir}")


if __name__ == "__main__":
    cli_flags.define_rank_correlation_flags()
    app.run(main)
