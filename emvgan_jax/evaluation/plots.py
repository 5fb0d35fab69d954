"""Plots of a run (PNG, and SVG beside each): precision-recall curves, a PCA map of the common space, training
curves, confusion matrix.

Figures are drawn with matplotlib's object API on the Agg canvas (no `pyplot`): no global backend is switched
and no GUI is touched, so training, the evaluate tool and tests can all draw, also on headless machines.

One entry point, `write_training_plots(workdir, ...)`, writes every plot that the inputs given allow; the evaluate
tool and the end of training both call it. The single plot functions are public for notebooks.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import TightLayoutEngine
from matplotlib.lines import Line2D

from emvgan_jax import atomic
from emvgan_jax.data.emomv import EMOTIONS
from emvgan_jax.evaluation import metrics

DIRECTIONS = metrics.DIRECTIONS
_DIRECTION_TITLES = {"video_to_music": "video -> music", "music_to_video": "music -> video"}
_DPI = 120
_PAD_INCHES = 0.1  # around the drawn content (matplotlib's default for a tight bounding box)
# A PCA map of more points than this is a blur; a fixed random subset (seed 0) is drawn instead.
MAX_MAP_ITEMS = 4000


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=_DPI)
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str, svg: bool = False) -> str:
  """Writes `path` (PNG) and, with `svg`, the same figure as SVG beside it (`x.png` -> `x.svg`); returns `path`.

  The bounding box is the drawn content, so legends placed outside the axes are kept. It is measured once, after
  the layout, and given to each save, so each file costs one draw: `bbox_inches='tight'`, or a layout engine left
  on the figure (which `fig.tight_layout()` leaves), makes every save draw the figure twice. The picture is the
  same pixel for pixel (tests/evaluation/test_plots.py).
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  TightLayoutEngine().execute(fig)  # the layout once, with no engine left on the figure
  bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(_PAD_INCHES)
  with atomic.replacing(path) as tmp:
    fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches=bbox)
  if svg:
    with atomic.replacing(svg_path(path)) as tmp:
      fig.savefig(tmp, format="svg", bbox_inches=bbox, metadata={"Date": None})  # no timestamp
  elif os.path.exists(svg_path(path)):
    os.remove(svg_path(path))  # an earlier evaluation's twin would be shown (report.html) instead of this figure
  return path


def svg_path(png_path: str) -> str:
  """The SVG twin of a plot's PNG."""
  return os.path.splitext(png_path)[0] + ".svg"


def _legend_below(ax: Any, *, offset: float = 0.16, **kwargs: Any) -> None:
  """A legend under the axes and their x label (outside the data); `offset`: how far below, in axes heights."""
  ax.legend(loc="upper center", bbox_to_anchor=(0.5, -offset), frameon=False, ncol=kwargs.pop("ncol", 2), **kwargs)


def _emotion_name(label: int, class_names: Sequence[str]) -> str:
  return class_names[label] if 0 <= label < len(class_names) else str(label)


# ------------------------------------------------------------------------------------------------------------
# Retrieval.


def chance_precision(query_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
  """Precision of a random ranking at any recall: a query's share of relevant items, averaged over the queries
  that have any (the queries the PR curve averages over)."""
  query_labels = np.asarray(query_labels).reshape(-1)
  gallery_labels = np.asarray(gallery_labels).reshape(-1)
  share = np.asarray([np.mean(gallery_labels == q) for q in query_labels])
  share = share[share > 0]
  return float(share.mean()) if share.size else float("nan")


def precision_recall_curves(
  video: np.ndarray, music: np.ndarray, labels: np.ndarray, *, num_points: int = 11
) -> dict[str, dict[str, Any]]:
  """Per direction: the interpolated label-relevance PR curve, its chance precision and the mAP.

  Args:
    video: (N, D) gallery video embeddings.
    music: (N, D) gallery music embeddings; item i is (video[i], music[i]).
    labels: (N,) emotion ids.
    num_points: recall levels of the interpolated curve.

  Returns:
    `{direction: {'recall', 'precision', 'chance', 'map', 'chance_map'}}`; `chance` is the precision of a random
    ranking at every recall, `chance_map` its expected AP (higher than `chance` on small galleries).
  """
  labels = np.asarray(labels).reshape(-1)
  sim = metrics.cosine_similarity_np(video, music)  # the metrics' own cosine
  out = {}
  for direction, s in zip(DIRECTIONS, (sim, sim.T)):
    recall, precision = metrics.precision_recall_curve(s, labels, labels, num_points=num_points)
    ap = metrics.average_precision_per_query(s, labels, labels)
    out[direction] = {
      "recall": recall,
      "precision": precision,
      "chance": chance_precision(labels, labels),
      "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
      "chance_map": metrics.retrieval_chance(labels, labels)["map"],
    }
  return out


def plot_precision_recall(
  curves: Mapping[str, Mapping[str, Any]], path: str, *, title: str = "", svg: bool = False
) -> str:
  """One panel per direction: the PR curve and the chance line (precision = the relevant share).

  Args:
    curves: the output of `precision_recall_curves`.
    path: the PNG to write (with `svg`, also its SVG twin, `svg_path(path)`).
    title: a figure title (e.g. the model and gallery).

  Returns:
    `path`.
  """
  directions = [d for d in DIRECTIONS if d in curves]
  fig = _new_figure(5.0 * len(directions), 4.4)
  axes = fig.subplots(1, len(directions), squeeze=False)[0]
  for ax, direction in zip(axes, directions):
    c = curves[direction]
    ax.plot(
      c["recall"], c["precision"], marker="o", markersize=3.5, color="tab:blue", label=f"model (mAP {c['map']:.3f})"
    )
    chance_map = f", mAP {c['chance_map']:.3f}" if "chance_map" in c else ""
    ax.axhline(c["chance"], color="grey", linestyle="--", label=f"chance (precision {c['chance']:.3f}{chance_map})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (label relevance)")
    ax.set_ylabel("interpolated precision")
    ax.set_title(_DIRECTION_TITLES[direction])
    ax.grid(alpha=0.3)
    _legend_below(ax, fontsize=8, ncol=1)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, svg)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projects rows of `x` on their first two principal axes (numpy SVD of the centred data).

  Returns:
    `(coords, explained)`: (N, 2) coordinates and the share of variance of each of the two axes.
  """
  x = np.asarray(x, np.float64)
  centred = x - x.mean(axis=0, keepdims=True)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  coords = centred @ vt[:2].T
  if coords.shape[1] < 2:  # one-dimensional data: a flat second axis
    coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
  var = s**2
  explained = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
  return coords, np.pad(explained, (0, 2 - explained.size))


def plot_embedding_map(
  video: np.ndarray,
  music: np.ndarray,
  labels: np.ndarray,
  path: str,
  *,
  class_names: Sequence[str] = EMOTIONS,
  title: str = "",
  alignment: Mapping[str, Any] | None = None,
  svg: bool = False,
) -> str:
  """A 2-D PCA map of gallery music and video embeddings: colour = emotion, circle = music, triangle = video.

  Both modalities are projected with one PCA, so how far the triangles sit from the circles shows the modality
  gap that the adversarial term is meant to close, and colour clusters show how affective the space is.

  Args:
    video: (N, D) video embeddings.
    music: (N, D) music embeddings.
    labels: (N,) emotion ids (of both; gallery item i is one segment).
    path: the PNG to write (with `svg`, also its SVG twin, `svg_path(path)`).
    class_names: names of the label ids.
    title: a figure title.
    alignment: the run's `alignment` block; its modality gap and probe accuracy go into the title.

  Returns:
    `path`.
  """
  video, music = np.asarray(video), np.asarray(music)
  labels = np.asarray(labels).reshape(-1)
  n = len(labels)
  subset = ""
  if n > MAX_MAP_ITEMS:
    keep = np.sort(np.random.default_rng(0).choice(n, MAX_MAP_ITEMS, replace=False))
    video, music, labels = video[keep], music[keep], labels[keep]
    subset = f", random {MAX_MAP_ITEMS} of {n} items"
  coords, explained = pca_2d(np.concatenate([video, music]))
  v_xy, m_xy = coords[: len(labels)], coords[len(labels) :]
  fig = _new_figure(6.4, 5.4)
  ax = fig.subplots()
  colours = [f"C{i}" for i in range(10)]
  present = sorted(set(labels.tolist()))
  for label in present:
    rows = labels == label
    colour = colours[label % len(colours)]
    ax.scatter(m_xy[rows, 0], m_xy[rows, 1], marker="o", s=28, color=colour, alpha=0.75, edgecolors="none")
    ax.scatter(v_xy[rows, 0], v_xy[rows, 1], marker="^", s=32, color=colour, alpha=0.75, edgecolors="none")
  handles = [
    Line2D(
      [], [], marker="s", linestyle="", color=colours[label % len(colours)], label=_emotion_name(label, class_names)
    )
    for label in present
  ]
  handles += [
    Line2D([], [], marker="o", linestyle="", color="black", label="music"),
    Line2D([], [], marker="^", linestyle="", color="black", label="video"),
  ]
  ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
  ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
  ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
  gap = ""
  if alignment:
    gap = f"\nmodality gap {alignment['centroid_gap']:.3f}"
    if alignment.get("modality_probe_accuracy") is not None:
      gap += f", modality probe accuracy {alignment['modality_probe_accuracy']:.3f} (0.5: indistinguishable)"
  ax.set_title((title + "\n" if title else "") + f"gallery embeddings, PCA ({n} items{subset}){gap}", fontsize=10)
  ax.grid(alpha=0.3)
  return _save(fig, path, svg)


# ------------------------------------------------------------------------------------------------------------
# Classification.


def confusion_matrix(scores: np.ndarray, match: np.ndarray, threshold: float) -> np.ndarray:
  """2 x 2 counts, rows = truth (mismatched, matched), columns = prediction (`score > threshold`, as in
  `metrics.classification_metrics`)."""
  truth = np.asarray(match).reshape(-1).astype(bool)
  pred = np.asarray(scores, np.float64).reshape(-1) > threshold
  return np.asarray(
    [[np.sum(~truth & ~pred), np.sum(~truth & pred)], [np.sum(truth & ~pred), np.sum(truth & pred)]], np.int64
  )


def plot_confusion_matrix(
  scores: np.ndarray, match: np.ndarray, threshold: float, path: str, *, title: str = "", svg: bool = False
) -> str:
  """The pair-classification confusion matrix, counts and row shares, at the run's threshold.

  Args:
    scores: (N,) matched scores.
    match: (N,) 1 matched / 0 mismatched.
    threshold: the decision threshold (a pair is predicted matched when score > threshold).
    path: the PNG to write (with `svg`, also its SVG twin, `svg_path(path)`).
    title: a figure title.

  Returns:
    `path`.
  """
  cm = confusion_matrix(scores, match, threshold)
  rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
  share = cm / rows
  fig = _new_figure(4.6, 4.2)
  ax = fig.subplots()
  ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
  names = ("mismatched", "matched")
  for i in range(2):
    for j in range(2):
      ax.text(
        j,
        i,
        f"{cm[i, j]}\n({100 * share[i, j]:.0f}%)",
        ha="center",
        va="center",
        color="white" if share[i, j] > 0.6 else "black",
        fontsize=11,
      )
  ax.set_xticks([0, 1], labels=names)
  ax.set_yticks([0, 1], labels=names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  accuracy = np.trace(cm) / max(cm.sum(), 1)
  ax.set_title(
    (title + "\n" if title else "") + f"{cm.sum()} pairs, threshold {threshold:.3g}, accuracy {accuracy:.3f}",
    fontsize=10,
  )
  return _save(fig, path, svg)


# ------------------------------------------------------------------------------------------------------------
# Training curves.


def read_metrics(path: str) -> list[dict[str, float]]:
  """The lines of a `metrics.jsonl` (a truncated last line, from a killed run, is skipped)."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def _series(rows: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of `key`, one value per step (a resumed run may log a step twice: the last one wins)."""
  by_step = {int(r["step"]): float(r[key]) for r in rows if key in r and r[key] is not None}
  steps = np.asarray(sorted(by_step))
  return steps, np.asarray([by_step[s] for s in steps])


_EVAL_KEYS = ("pairs/accuracy", "pairs/f1", "pairs/roc_auc", "gallery/map", "gallery/hit@1", "gallery/recall@10")


_ALIGNMENT_KEYS = ("alignment/centroid_gap", "alignment/true_pair_cosine", "alignment/random_pair_cosine")


def plot_training_curves(
  metrics_path: str, path: str, *, title: str = "", best_step: int | None = None, svg: bool = False
) -> str | None:
  """Loss terms, discriminator accuracy and validation metrics over steps, from a run's `metrics.jsonl`.

  Args:
    metrics_path: the run's `metrics.jsonl`.
    path: the PNG to write (with `svg`, also its SVG twin, `svg_path(path)`).
    title: a figure title.
    best_step: the step of the evaluated checkpoint, marked by a vertical line in every panel.

  Returns:
    `path`, or None when the file holds no metrics.
  """
  rows = read_metrics(metrics_path)
  if not rows:
    return None
  keys = sorted({k for r in rows for k in r})
  loss_keys = [k for k in keys if k.startswith("train/loss")]
  panels = [("losses", loss_keys + [k for k in ("pairs/loss",) if k in keys])]
  if "train/disc_accuracy" in keys:
    panels.append(("discriminator accuracy (0.5 = modalities indistinguishable)", ["train/disc_accuracy"]))
  validation = [k for k in _EVAL_KEYS if k in keys]
  if validation:
    panels.append(("evaluation (selection split and gallery)", validation))
  alignment = [k for k in _ALIGNMENT_KEYS if k in keys]
  if alignment:
    panels.append(("modality alignment (gallery, unit embeddings)", alignment))
  panels = [p for p in panels if p[1]]
  if not panels:
    return None
  fig = _new_figure(5.2 * len(panels), 4.2)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (name, panel_keys) in zip(axes, panels):
    for key in panel_keys:
      steps, values = _series(rows, key)
      style = "--" if key == "pairs/loss" else "-"
      marker = "o" if len(steps) < 30 else None  # short runs: show the points themselves
      ax.plot(
        steps,
        values,
        linestyle=style,
        marker=marker,
        markersize=3,
        label=key.split("/", 1)[1] if key.startswith("train/") else key,
      )
    if name.startswith("discriminator"):
      ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
      ax.set_ylim(-0.02, 1.02)
    if best_step is not None:
      ax.axvline(best_step, color="black", linestyle=":", linewidth=1, label=f"checkpoint (step {best_step})")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    _legend_below(ax, fontsize=7, offset=0.2)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, svg)


# ------------------------------------------------------------------------------------------------------------
# The entry point.


def write_training_plots(
  workdir: str,
  *,
  embeddings: Mapping[str, np.ndarray] | None = None,
  pair_predictions: Mapping[str, Any] | None = None,
  results: Mapping[str, Any] | None = None,
  out_dir: str | None = None,
  title: str = "",
  class_names: Sequence[str] = EMOTIONS,
  svg: bool = False,
) -> dict[str, str]:
  """Writes every plot of a run that the given inputs allow; returns {plot name: PNG path}.

  - `training_curves.png` from `workdir/metrics.jsonl`, when it exists and holds metrics;
  - `precision_recall.png` and `embedding_pca.png` when `embeddings` are given (retrieval models);
  - `confusion_matrix.png` when `pair_predictions` are given.

  Args:
    workdir: the run's workdir (for `metrics.jsonl`; also the default home of the plots).
    embeddings: gallery embeddings as in `embeddings.npz`: `video` and `music` (N, D), `emotion` (N,) label ids.
    pair_predictions: `score` (N,) matched scores, `match` (N,) labels and `threshold` (float) on a pair split.
    results: the run's results dict (its `checkpoint_step` is marked on the training curves).
    out_dir: where to write (default `workdir/plots`).
    title: a title for every figure (e.g. model, dataset, checkpoint).
    class_names: names of the emotion ids.
    svg: also write each figure as SVG beside its PNG (report.html then embeds the SVG).

  Returns:
    The plots written, by name (`training_curves`, `precision_recall`, `embedding_pca`, `confusion_matrix`).
  """
  out_dir = out_dir or os.path.join(workdir, "plots")
  written: dict[str, str] = {}
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if os.path.isfile(metrics_path):
    best_step = (results or {}).get("checkpoint_step")
    path = plot_training_curves(
      metrics_path, os.path.join(out_dir, "training_curves.png"), title=title, best_step=best_step, svg=svg
    )
    if path:
      written["training_curves"] = path
  if embeddings is not None:
    video, music, labels = embeddings["video"], embeddings["music"], embeddings["emotion"]
    curves = precision_recall_curves(video, music, labels)
    written["precision_recall"] = plot_precision_recall(
      curves, os.path.join(out_dir, "precision_recall.png"), title=title, svg=svg
    )
    written["embedding_pca"] = plot_embedding_map(
      video,
      music,
      labels,
      os.path.join(out_dir, "embedding_pca.png"),
      class_names=class_names,
      title=title,
      alignment=(results or {}).get("alignment"),
      svg=svg,
    )
  if pair_predictions is not None:
    written["confusion_matrix"] = plot_confusion_matrix(
      pair_predictions["score"],
      pair_predictions["match"],
      float(pair_predictions["threshold"]),
      os.path.join(out_dir, "confusion_matrix.png"),
      title=title,
      svg=svg,
    )
  logging.info("Plots: %s", ", ".join(sorted(written.values())) or "none")
  return written
