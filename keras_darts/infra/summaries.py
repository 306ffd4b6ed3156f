"""TensorBoard output of a search: scalars, alpha heatmaps and the current genotype.

The trainer calls `EpochWriter` once per epoch.  The pictures are drawn with
matplotlib's object API (`Figure` + `FigureCanvasAgg`) rather than pyplot, so
no global figure registry is touched and nothing needs closing or leaks when
this runs many times in a long search.
"""

import json
import re

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from keras_darts.space import hypercuboid

_DPI = 100
_INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
_OUTPUT_NAME = "c_{k}"


# --------------------------------------------------------------------------- naming


def state_name(index):
    """Name of cell state `index`: 0/1 are the cell inputs, 2 + i is node i."""
    return _INPUT_NAMES[index] if index < 2 else f"n{index - 2}"


def num_nodes_for_edges(num_edges):
    """Number of intermediate nodes n with sum_{i<n} (2 + i) == num_edges.

    Raises ValueError when `num_edges` is not such a sum (a malformed alpha).
    """
    nodes, total = 0, 0
    while total < num_edges:
        total += 2 + nodes
        nodes += 1
    if num_edges <= 0 or total != num_edges:
        raise ValueError(
            f"{num_edges} edges do not make a whole number of nodes "
            "(node i has 2 + i incoming edges: 2, 5, 9, 14, 20, ... edges)")
    return nodes


def edge_labels(num_edges):
    """Labels like "n1<-c_{k-2}" for the rows of an alpha matrix, in alpha order."""
    return [f"n{node}<-{state_name(source)}"
            for node in range(num_nodes_for_edges(num_edges))
            for source in range(2 + node)]


def edge_tags(num_edges):
    """Tag-safe edge names in alpha order: "00_n0<-c(k-2)", "01_n0<-c(k-1)", ..."""
    return [f"{row:02d}_" + label.replace("_{", "(").replace("}", ")")
            for row, label in enumerate(edge_labels(num_edges))]


def _to_image(fig):
    """Renders `fig` to a uint8 RGB array [H, W, 3]."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    fig.clear()  # Drop the artists now; the figure is not registered anywhere else.
    return image


# --------------------------------------------------------------------------- alpha heatmap


def alpha_heatmap(probs, primitives, title="", rows=None, row_title="edge (node <- input)"):
    """Heatmap of softmax(alpha) for one cell type: rows = edges, columns = ops.

    `probs` is [num_edges, num_ops] (numpy or an eager tensor).  Each cell is
    annotated with its value, so the colour scale (smallest .. largest value,
    to keep contrast early in the search when all values are near 1/num_ops)
    only guides the eye.  Returns a uint8 RGB image [H, W, 3].
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D [edges, ops], got shape {probs.shape}")
    primitives = [str(p) for p in primitives]
    if len(primitives) != probs.shape[1]:
        raise ValueError(
            f"{len(primitives)} primitives for {probs.shape[1]} columns of probs")
    if rows is None:
        rows = edge_labels(probs.shape[0])  # Raises on a partial node.

    num_edges, num_ops = probs.shape
    fig = Figure(figsize=(2.6 + 0.75 * num_ops, 2.0 + 0.32 * num_edges),
                 dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    finite = probs[np.isfinite(probs)]  # A diverged alpha still renders, as "nan".
    vmin = float(finite.min()) if finite.size else 0.0
    vmax = max(float(finite.max()), vmin + 1e-6) if finite.size else 1.0
    mesh = ax.imshow(probs, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    _annotate_cells(ax, probs, vmin, vmax)
    ax.set_xticks(range(num_ops), primitives, rotation=45, ha="right",
                  rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(num_edges), rows, fontsize=8)
    ax.set_xlabel("op")
    ax.set_ylabel(row_title)
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(mesh, ax=ax, shrink=0.8)
    return _to_image(fig)


def _annotate_cells(ax, probs, vmin, vmax):
    # Dark text on the bright end of viridis, white on the dark end.
    for (row, col), value in np.ndenumerate(probs):
        bright = np.isfinite(value) and value > vmin + 0.6 * (vmax - vmin)
        ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=7,
                color="black" if bright else "white")


# --------------------------------------------------------------------------- genotype picture

_COLUMN_GAP = 4.0  # Data units between depth columns (aspect is equal).
_ROW_GAP = 2.0
_NODE_RADIUS = 0.38
_PAD = 0.25  # Data units between the outermost drawn thing and the frame.
_INCHES_PER_UNIT = 0.6  # Figure scale: inches per data unit.
_LABEL_FONTSIZE = 7
_RADS = (0.0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45, 0.6, -0.6)
# Label positions along an arrow, most central first.
_LABEL_TS = tuple(sorted(np.linspace(0.2, 0.8, 13), key=lambda t: abs(t - 0.5)))


def _node_depths(pairs, num_nodes):
    """Depth per state: inputs 0, node = 1 + deepest input (longest path)."""
    depths = [0, 0]
    for node in range(num_nodes):
        inputs = [index for _, index in pairs[2 * node:2 * node + 2]]
        depths.append(1 + max(depths[i] for i in inputs))
    return depths


def _cell_layout(pairs, num_nodes):
    """Positions {state index or "out": (x, y)}, columns by depth, output last."""
    depths = _node_depths(pairs, num_nodes)
    columns = {}
    for state, depth in enumerate(depths):
        columns.setdefault(depth, []).append(state)
    positions = {}
    for depth, states in columns.items():
        for row, state in enumerate(states):  # Top to bottom in index order.
            positions[state] = (depth * _COLUMN_GAP, ((len(states) - 1) / 2 - row) * _ROW_GAP)
    positions["out"] = ((max(depths) + 1) * _COLUMN_GAP, 0.0)
    return positions


def _arc_point(start, end, rad, t):
    """Point at parameter t on matplotlib's "arc3" curve (a quadratic Bezier).

    Arc3 puts the control point at the chord midpoint, offset by rad times the
    chord rotated by -90 degrees.  With an equal-aspect axes this holds in
    data coordinates as well as display coordinates.
    """
    (x1, y1), (x2, y2) = start, end
    control = np.array([(x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)])
    p0, p2 = np.array(start), np.array(end)
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * control + t ** 2 * p2


def _clearance(start, end, rad, obstacles):
    """Smallest distance from the curve to any obstacle centre."""
    if not obstacles:
        return np.inf
    points = np.array([_arc_point(start, end, rad, t) for t in np.linspace(0.1, 0.9, 17)])
    centres = np.array(obstacles)
    return float(np.min(np.linalg.norm(points[:, None] - centres[None], axis=-1)))


def _choose_rad(start, end, obstacles, taken):
    """Least-curved arc that misses other nodes and no earlier edge already uses."""
    free = [rad for rad in _RADS if (start, end, rad) not in taken] or [_RADS[0]]
    for rad in free:
        if _clearance(start, end, rad, obstacles) > 1.6 * _NODE_RADIUS:
            return rad
    return max(free, key=lambda rad: _clearance(start, end, rad, obstacles))


def _route(positions, source, target, taken):
    """(rad, start, end) of the arrow source -> target; records its rad in `taken`."""
    start, end = positions[source], positions[target]
    obstacles = [xy for key, xy in positions.items() if key not in (source, target)]
    rad = _choose_rad(start, end, obstacles, taken)
    taken.add((start, end, rad))
    return rad, start, end


def _arc_angle(start, end, rad, t):
    """Direction of the arc at t in degrees, kept upright (-90..90] for reading."""
    dx, dy = _arc_point(start, end, rad, t + 1e-3) - _arc_point(start, end, rad, t - 1e-3)
    angle = np.degrees(np.arctan2(dy, dx))
    return angle - 180 if angle > 90 else angle + 180 if angle <= -90 else angle


def _label_rect(xy, angle, text):
    """Approximate label box (centre, angle, half width, half height) in data units."""
    # A DejaVu Sans character is about 0.6 em wide; a line about 1.3 em high.
    em = _LABEL_FONTSIZE / 72 / _INCHES_PER_UNIT
    return np.asarray(xy, dtype=float), angle, 0.3 * em * (len(text) + 1), 0.65 * em


def _rect_corners(rect):
    centre, angle, half_w, half_h = rect
    u = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    v = np.array([-u[1], u[0]])
    return np.array([centre + su * half_w * u + sv * half_h * v
                     for su in (-1, 1) for sv in (-1, 1)])


def _rects_overlap(a, b):
    """Separating-axis test for two rotated rectangles."""
    corners_a, corners_b = _rect_corners(a), _rect_corners(b)
    for angle in (a[1], a[1] + 90, b[1], b[1] + 90):
        axis = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
        pa, pb = corners_a @ axis, corners_b @ axis
        if pa.max() < pb.min() or pb.max() < pa.min():
            return False
    return True


def _label_place(start, end, rad, text, placed, node_centres):
    """(xy, angle) for an edge label that hits the fewest labels and nodes.

    Greedy: earlier labels stay put; this one slides along its own arrow, on
    the line first, then just beside it (still parallel, so it reads as
    belonging to that arrow).  `placed` collects the chosen label rectangles.
    """
    nodes = [(np.asarray(c, dtype=float), 0.0, _NODE_RADIUS, _NODE_RADIUS) for c in node_centres]
    half_h = _label_rect((0, 0), 0, text)[3]

    def rect(candidate):
        t, side = candidate
        angle = _arc_angle(start, end, rad, t)
        normal = np.array([-np.sin(np.radians(angle)), np.cos(np.radians(angle))])
        xy = _arc_point(start, end, rad, t) + side * 1.1 * half_h * normal
        return _label_rect(xy, angle, text)

    def hits(candidate):
        return sum(_rects_overlap(rect(candidate), other) for other in placed + nodes)

    candidates = [(t, side) for side in (0, 1, -1) for t in _LABEL_TS]
    best = rect(min(candidates, key=hits))  # min keeps the earliest on ties.
    placed.append(best)
    return tuple(best[0]), best[1]


def _cell_geometry(pairs, concat, num_nodes):
    """Everything a cell drawing places, in data units, before anything is drawn:
    node positions, arrows (source, target, rad, dashed), labels (op, xy, angle)
    and the (x range, y range) that holds every node, arc and label box."""
    positions = _cell_layout(pairs, num_nodes)
    taken, placed, arrows, labels = set(), [], [], []
    for position, (op, source) in enumerate(pairs):
        target = 2 + position // 2
        rad, start, end = _route(positions, source, target, taken)
        arrows.append((source, target, rad, False))
        # Labels follow their arrow's direction so crossing edges stay tellable apart.
        labels.append((op, *_label_place(start, end, rad, op, placed, list(positions.values()))))
    for state in concat:
        arrows.append((state, "out", _route(positions, state, "out", taken)[0], True))

    # The extent: node circles, points along every arc (an arc may bow past the
    # nodes, as an edge from c_{k-1} below the frame did) and every label's corners.
    points = [np.asarray(xy) + offset for xy in positions.values()
              for offset in _NODE_RADIUS * np.array([[-1, -1], [1, 1]])]
    for source, target, rad, _ in arrows:
        points += [_arc_point(positions[source], positions[target], rad, t)
                   for t in np.linspace(0, 1, 33)]
    for rect in placed:
        points += list(_rect_corners(rect))
    points = np.array(points)
    low, high = points.min(axis=0) - _PAD, points.max(axis=0) + _PAD
    extent = ((low[0], high[0]), (low[1], high[1]))
    return positions, arrows, labels, extent


def _draw_cell(ax, geometry, title):
    positions, arrows, labels, ((x0, x1), (y0, y1)) = geometry
    circles = {}
    for state, xy in positions.items():
        is_io = state == "out" or state < 2
        circles[state] = Circle(xy, _NODE_RADIUS, facecolor="#9ecae1" if is_io else "#fdd49e",
                                edgecolor="black", zorder=3)
        ax.add_patch(circles[state])
        name = _OUTPUT_NAME if state == "out" else state_name(state)
        label = f"${name}$" if is_io else str(state - 2)  # Mathtext keeps c_{k-2} compact.
        ax.text(*xy, label, ha="center", va="center", fontsize=10, zorder=4)
    for source, target, rad, dashed in arrows:
        style = (dict(color="gray", linewidth=0.8, linestyle="--", zorder=1) if dashed
                 else dict(color="black", linewidth=1.0, zorder=2))
        ax.add_patch(FancyArrowPatch(
            positions[source], positions[target], patchA=circles[source],
            patchB=circles[target], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=12, **style))
    for op, xy, angle in labels:
        ax.text(*xy, op, ha="center", va="center", fontsize=_LABEL_FONTSIZE, zorder=5,
                rotation=angle, rotation_mode="anchor",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white",
                          edgecolor="none", alpha=0.85))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")  # Needed for _arc_point to match the drawn arcs.
    ax.set_title(title)
    ax.axis("off")


def genotype_figure(genotype):
    """The normal and the reduction cell side by side, as a matplotlib Figure."""
    geometries = [_cell_geometry(*genotype.cell(reduction), genotype.num_nodes)
                  for reduction in (False, True)]
    # Size the figure from the extents so larger cells get more pixels.
    widths = [x1 - x0 for *_, ((x0, x1), _) in geometries]
    height = max(y1 - y0 for *_, (_, (y0, y1)) in geometries)
    fig = Figure(figsize=(_INCHES_PER_UNIT * sum(widths) + 0.5,
                          _INCHES_PER_UNIT * height + 0.6),
                 dpi=_DPI, layout="constrained")
    axes = fig.subplots(1, 2, width_ratios=widths)
    for ax, geometry, title in zip(axes, geometries, ("normal cell", "reduction cell")):
        _draw_cell(ax, geometry, title)
    return fig


def genotype_image(genotype):
    """Picture of the normal and the reduction cell side by side (uint8 RGB)."""
    return _to_image(genotype_figure(genotype))


# --------------------------------------------------------------------------- markdown


def genotype_markdown(genotype):
    """Markdown for tf.summary.text: a node | input | op table per cell, then the JSON."""
    # Names go in backticks so markdown does not read the underscores as emphasis.
    lines = []
    for reduction, title in ((False, "normal cell"), (True, "reduction cell")):
        pairs, concat = genotype.cell(reduction)
        lines += [f"**{title}**", "", "| node | input | op |", "|---|---|---|"]
        for position, (op, source) in enumerate(pairs):
            lines.append(f"| n{position // 2} | `{state_name(source)}` | `{op}` |")
        output = ", ".join(f"`{state_name(i)}`" for i in concat)
        lines += ["", f"`{_OUTPUT_NAME}` = concat({output})", ""]
    lines += ["```json", genotype.to_json(), "```"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- HyperCuboid paths


def path_image(path):
    """The path through the grid: stages left to right, widths bottom to top
    (log scale), each stage's op written on its segment (uint8 RGB)."""
    xs = list(range(len(path.stages) + 1))
    ys = [path.stem] + [stage.c_out for stage in path.stages]
    fig = Figure(figsize=(1.2 * len(xs) + 1, 3.2), dpi=_DPI, layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, "o-", color="#1f77b4")
    for i, stage in enumerate(path.stages):
        label = "pool" if stage.op == "resizable_pool" else "sep"
        ax.annotate(label, ((i + i + 1) / 2, (ys[i] * ys[i + 1]) ** 0.5), ha="center",
                    va="bottom", fontsize=8)
    ax.set_yscale("log", base=2)
    ax.set_yticks(sorted(set(ys)), [str(y) for y in sorted(set(ys))])
    ax.set_xticks(xs, ["stem"] + [f"l{s.layer}/s{s.stride}" for s in path.stages], fontsize=8)
    ax.set_ylabel("channels")
    ax.set_title("HyperCuboid path")
    return _to_image(fig)


def path_markdown(path):
    """Markdown: a stage | op | channels table, then the JSON."""
    lines = [f"**stem**: {path.stem} channels", "", "| stage | op | channels |",
             "|---|---|---|"]
    lines += [f"| layer {s.layer} stride {s.stride} | `{s.op}` | {s.c_in} -> {s.c_out} |"
              for s in path.stages]
    return "\n".join(lines + ["", "```json", path.to_json(), "```"])


# --------------------------------------------------------------------------- writer


def _flat(config_dict, prefix=""):
    """{"a": 1, "s": {"b": 2}} -> {"a": 1, "s.b": 2}."""
    flat = {}
    for name, value in config_dict.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


class EpochWriter:
    """TensorBoard summaries of a run, written to `logdir` when the run commits them.

    Every call only records the summary; `flush()` writes what was recorded. A run
    flushes right after each checkpoint (`RunLoop.save`), so the event files hold
    exactly the steps a checkpoint holds: a run killed between two checkpoints
    redoes those steps after `--resume` and writes their points once, never twice
    (what an eager write before the checkpoint did). Leaving the `with` block on an
    error drops what was not committed. Call from eager Python code (not inside
    tf.function); `step` may be a plain int.
    """

    def __init__(self, logdir):
        self.logdir = logdir
        self._writer = tf.summary.create_file_writer(str(logdir))
        self._pending = []  # Zero-argument writes, in call order.

    def _record(self, step, write):
        step = int(step)

        def run():
            with self._writer.as_default(step=step):
                write()
        self._pending.append(run)

    def scalars(self, step, values):
        """Records each {tag: value}, e.g. {"loss/train": 1.2, "lr/weights": 0.025}."""
        values = {tag: float(value) for tag, value in values.items()}
        self._record(step, lambda: [tf.summary.scalar(tag, v) for tag, v in values.items()])

    def alphas(self, step, probs_by_cell, primitives):
        """One heatmap image per cell type, tag "alphas/<cell_type>"."""
        self.heatmaps(step, "alphas", probs_by_cell, primitives, "softmax(alpha)")

    def heatmaps(self, step, name, matrices_by_cell, primitives, what, rows=None,
                 row_title="edge (node <- input)"):
        """One heatmap of per-edge, per-op values per cell type, tag "<name>/<cell_type>"
        (e.g. MSR-DARTS's mean stable ranks); `what` titles them; `rows`: row
        labels other than the edges'."""
        for cell_type, matrix in matrices_by_cell.items():
            image = alpha_heatmap(np.asarray(matrix, np.float64), primitives,
                                  f"{what}, {cell_type}{'' if rows else ' cell'}, step "
                                  f"{int(step)}", rows, row_title)
            self.image(step, f"{name}/{cell_type}", image)

    def genotype(self, step, genotype):
        """The derived genotype as text ("genotype/text") and picture ("genotype/cells";
        a HyperCuboid path: "genotype/path")."""
        if hypercuboid.is_path(genotype):
            self.text(step, "genotype/text", path_markdown(genotype))
            self.image(step, "genotype/path", path_image(genotype))
            return
        self.text(step, "genotype/text", genotype_markdown(genotype))
        self.image(step, "genotype/cells", genotype_image(genotype))

    def alpha_trajectories(self, step, probs_by_cell, primitives):
        """softmax(alpha) of every edge and op as scalars
        "alpha_trajectory/<cell>/<edge>/<op>": with `trajectory_layout`, one line
        chart per edge with a line per op over the run (the DARTS papers' plot)."""
        values = {}
        for cell_type, probs in probs_by_cell.items():
            probs = np.asarray(probs, np.float64)
            for edge, row in zip(edge_tags(len(probs)), probs):
                values.update({f"alpha_trajectory/{cell_type}/{edge}/{op}": p
                               for op, p in zip(primitives, row)})
        self.scalars(step, values)

    def trajectory_layout(self, cell_types, num_edges):
        """The Custom Scalars dashboard: a section per cell type, a chart per edge."""
        from tensorboard.plugins.custom_scalar import layout_pb2
        from tensorboard.plugins.custom_scalar import summary as custom_scalar

        categories = [layout_pb2.Category(title=f"softmax(alpha) over the run: {cell} cell", chart=[
            layout_pb2.Chart(title=f"{cell} {edge}", multiline=layout_pb2.MultilineChartContent(
                tag=[f"^{re.escape(f'alpha_trajectory/{cell}/{edge}/')}"]))
            for edge in edge_tags(num_edges)]) for cell in cell_types]
        proto = custom_scalar.pb(layout_pb2.Layout(category=categories)).SerializeToString()
        self._record(0, lambda: tf.summary.experimental.write_raw_pb(proto, step=0))

    def config_text(self, step, config_dict):
        """The run's settings as a markdown table ("config"), at the step the run
        (re)started from, so each resume adds the settings it continued with."""
        rows = "".join(f"| `{name}` | `{json.dumps(value)}` |\n"
                       for name, value in sorted(_flat(config_dict).items()))
        self.text(step, "config", "| setting | value |\n|---|---|\n" + rows)

    def hparams(self, step, values, metrics, trial):
        """The HParams dashboard's row of this run: `values` (a config dict;
        sections become "section.key") as its hyper-parameters, `metrics` (scalar
        tags) as its columns.  TensorBoard keeps the first row a run writes."""
        from tensorboard.plugins.hparams import api as hp

        values = {name: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
                  for name, value in _flat(values).items()}
        config = dict(hparams=[hp.HParam(name) for name in values],
                      metrics=[hp.Metric(tag) for tag in metrics])

        def write():
            hp.hparams_config(**config)
            hp.hparams(values, trial_id=trial)
        self._record(step, write)

    def histogram(self, step, tag, values):
        """A distribution of `values` (e.g. every pool architecture's score)."""
        values = np.asarray(values, np.float32)
        self._record(step, lambda: tf.summary.histogram(tag, values))

    def image(self, step, tag, image):
        """One uint8 RGB image [H, W, 3] (e.g. a scatter plot)."""
        image = np.asarray(image)[None]
        self._record(step, lambda: tf.summary.image(tag, image, max_outputs=1))

    def text(self, step, tag, markdown):
        """A markdown text summary (TensorBoard's Text tab renders tables)."""
        self._record(step, lambda: tf.summary.text(tag, markdown))

    def flush(self):
        """Writes every recorded summary to the event file and flushes it."""
        pending, self._pending = self._pending, []
        for write in pending:
            write()
        self._writer.flush()

    def close(self):
        """Writes what is recorded, then closes the event file."""
        self.flush()
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        if exc_type is not None:  # Not committed by a checkpoint: the steps are redone.
            self._pending = []
        self.close()
        return False
