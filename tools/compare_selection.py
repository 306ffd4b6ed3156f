"""Runs several selection criteria on ONE searched supernet and tabulates them.

  python tools/compare_selection.py --checkpoint=runs/quickstart \
      --output_dir=runs/quickstart_compare [--criteria=magnitude,stable_rank] \
      [--pt_proj_intv=5 --pt_crit_normal=acc --pt_crit_reduce=acc --msr_shapes=code]

Each criterion runs exactly as `python -m keras_darts.select` runs it
(`runs.search_run.run_selection`), from the same checkpoint of --checkpoint (only read;
perturbation tunes its own copy of the supernet), and writes its outputs into
OUTPUT/<criterion>/.  Every genotype is then evaluated as a discrete
architecture inside the SEARCHED supernet (only its chosen ops on its chosen
edges, BatchNorm batch statistics; see `ACCURACY_NOTE`) on the search-val
split, so all rows share one set of weights.  Writes OUTPUT/comparison.md,
OUTPUT/comparison.csv and the markdown as a TensorBoard text summary
("comparison/table") in OUTPUT/tensorboard.
"""

import csv
import dataclasses
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, logging  # noqa: E402

from keras_darts.cli import flags as cli_flags  # noqa: E402
from keras_darts.cli.guard import run_guarded  # noqa: E402
from keras_darts.config import SearchConfig  # noqa: E402
from keras_darts.errors import ConfigError  # noqa: E402
from keras_darts.infra.summaries import EpochWriter  # noqa: E402
from keras_darts.runs.search_run import SearchRun, run_selection  # noqa: E402
from keras_darts.space import genotype as genotype_lib  # noqa: E402
from keras_darts.space import plans  # noqa: E402

cli_flags.define_compare_flags()

PROGRAM = "compare_selection"
COLUMNS = ("criterion", "genotype", "val_accuracy", "val_loss", "params",
           "selection_seconds", "total_seconds")

# Why train mode: the supernet's running BN statistics were collected while every
# edge mixed all its ops (each scaled by softmax(alpha)); with only the chosen ops
# running, unweighted, the node states have other means and variances, so the
# running statistics would measure a mismatch rather than the architecture.
# Batch statistics renormalise every layer for the subnet that actually runs,
# as DARTS-PT's decision scoring does (BUILD_NOTES.md has measured numbers).
ACCURACY_NOTE = ("val accuracy / loss: the discrete architecture inside the searched "
                 "supernet (only its chosen ops on its chosen edges) on search-val, "
                 "BatchNorm in train mode (batch statistics: the running ones were "
                 "collected under mixing)")


@dataclasses.dataclass(frozen=True)
class Row:
    """One criterion's line of the table."""

    criterion: str
    genotype: genotype_lib.Genotype
    val_accuracy: float
    val_loss: float
    params: int
    selection_seconds: float
    total_seconds: float


def _check_new_output_dir(output_dir):
    if os.path.isfile(output_dir) or (os.path.isdir(output_dir) and os.listdir(output_dir)):
        raise ConfigError(f"--output_dir {output_dir} already holds files; choose a new or "
                          "empty directory")


def markdown(rows, header_lines):
    lines = [*header_lines, "",
             "| criterion | genotype | val accuracy | val loss | params | selection s "
             "| total s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.criterion} | `{r.genotype.to_text()}` | {r.val_accuracy:.4f} | "
                     f"{r.val_loss:.4f} | {r.params:,} | {r.selection_seconds:.1f} | "
                     f"{r.total_seconds:.1f} |")
    return "\n".join(lines) + "\n"


def csv_text(rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow([r.criterion, r.genotype.to_text(), repr(r.val_accuracy),
                         repr(r.val_loss), r.params, f"{r.selection_seconds:.3f}",
                         f"{r.total_seconds:.3f}"])
    return out.getvalue()


def _write_tables(output_dir, rows, header_lines):
    # Rewritten after every criterion: an interrupted comparison keeps its rows.
    with open(os.path.join(output_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(markdown(rows, header_lines))
    with open(os.path.join(output_dir, "comparison.csv"), "w", encoding="utf-8") as f:
        f.write(csv_text(rows))


def compare(source, output_dir):
    """Runs --criteria on the supernet in `source`; returns the table rows."""
    configs = cli_flags.to_compare_configs(SearchConfig.load_from_run(source))
    _check_new_output_dir(output_dir)
    # The yardstick: the searched supernet, loaded once and never tuned. Loading it
    # first also rejects a missing or corrupt checkpoint before anything is written.
    first = next(iter(configs.values()))
    reference = SearchRun(dataclasses.replace(first, output_dir=output_dir))
    checkpoint = reference.restore_searched(source)
    data = reference.data
    header_lines = [
        "# Selection criteria on one searched supernet", "",
        f"source: `{source}` (`{os.path.basename(checkpoint)}`, epoch "
        f"{int(reference.epoch.numpy())}; dataset {data.info.name}, "
        f"{data.info.num_search_val} search-val images)", "",
        f"{ACCURACY_NOTE}.", "",
        "params: weights of that architecture inside the supernet (stem, cell input "
        "preprocessing, chosen ops, classifier); selection s: the criterion itself; total s: "
        "the whole `keras_darts.select` run (data, supernet build and restore, selection, "
        "test-set evaluation, outputs)."]
    os.makedirs(output_dir, exist_ok=True)
    rows = []
    for name, config in configs.items():
        logging.info("compare_selection: running '%s' into %s", name, config.output_dir)
        start = time.time()
        summary = run_selection(config, source)
        total = time.time() - start
        genotype = genotype_lib.load(os.path.join(config.output_dir, "genotype.json"))
        loss, accuracy = reference.evaluate(data.search_val_eval, plans.Discrete(genotype))
        rows.append(Row(name, genotype, accuracy, loss,
                        reference.model.count_arch_params(genotype),
                        summary["selection_seconds"], total))
        logging.info("compare_selection: %s: %s | val accuracy %.4f loss %.4f | %d params | "
                     "%.1f s", name, genotype.to_text(), accuracy, loss, rows[-1].params, total)
        _write_tables(output_dir, rows, header_lines)
    with EpochWriter(os.path.join(output_dir, "tensorboard")) as writer:
        writer.text(int(reference.epoch.numpy()), "comparison/table",
                    markdown(rows, header_lines))
    print(markdown(rows, header_lines))
    return rows


def main(argv):
    flags = cli_flags.FLAGS
    run_guarded(PROGRAM, argv, lambda: compare(flags.checkpoint, flags.output_dir),
                lambda: f"{flags.checkpoint} is unchanged; {flags.output_dir} holds the "
                        "criteria finished so far")


if __name__ == "__main__":
    app.run(main)
