"""Configs x seeds (x folds) -> one comparison table: the library of `emvgan-sweep` (`tools/sweep.py`).

Each (config, seed) trains in-process, one after another, into `<workdir>/<config-slug>/seed_<seed>` (slug:
`emomv_c`, `emomv_baseline-c-retrieval_multi`). A run whose `results.json` exists is finished and is read back,
not retrained; an interrupted one resumes from its latest checkpoint. The evaluation is training's own
`results.json` (the best checkpoint, selected on validation); on EmoMV-A, whose protocol reports
classification on test, the best checkpoint is evaluated once more on test (`evaluation/run.py`, also reused
when present).

The cross-validation protocol (docs/models.md, section 4.7) pools train and validation and cuts them into
`cv_folds` folds by YouTube id, `cv_repeats` times with different fold seeds; each (config, repeat, fold, seed)
trains on the other folds, selects its checkpoint on a holdout of them (`selection_fraction`, grouped the same
way), and reports on the held-out fold and the gallery rebuilt from its segments, in
`<workdir>/<config-slug>/cv<repeat>_fold<fold>/seed_<seed>`. The table then adds the paired difference of the
reference config (default: the first) to every other config, per fold, with a 95% interval from the corrected
resampled t statistic (Nadeau and Bengio 2003), which widens the naive interval for the overlap of the training
folds.

`eval_datasets` (published protocol) also evaluates every trained model on other EmoMV sets, as `emvgan-evaluate
--dataset` does (their default split and gallery, standardised with the training set's statistics; peers are
fitted again with the value they chose and scored there), one table each: `table_emomv_a.md`.

Writes `<workdir>/table.md` and `<workdir>/table.json`: per model, mean +- std over seeds of v->m and m->v label
mAP, hit@1, hit@5 and pair Recall@10, pair-classification accuracy, F1 and ROC-AUC, and the modality gap and
probe accuracy of the common space (`evaluation/alignment.py`); the std is the SAMPLE standard deviation
(ddof=1; none for a single seed). Chance has its own row; the caption names the splits and the selection split.
A classification-only baseline has empty retrieval cells. The sweep's wall time is recorded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from emvgan_jax import atomic, config_lib, errors, families, train
from emvgan_jax.data import emomv
from emvgan_jax.evaluation import ensemble as ensemble_lib
from emvgan_jax.evaluation import peers
from emvgan_jax.evaluation import run as evaluate_lib
from emvgan_jax.experiments import runs as experiments
from emvgan_jax.experiments.runs import STD_DDOF, TrainFn, get_path, mean_std
from emvgan_jax.runtime import provenance

PROTOCOLS = ("published", "cv")
# The metrics of the paired comparison (cross-validation protocol): both mAPs, both hit@1 and ROC-AUC.
PAIRED_KEYS = (
  "video_to_music/map",
  "music_to_video/map",
  "video_to_music/hit@1",
  "music_to_video/hit@1",
  "classification/roc_auc",
)


@dataclasses.dataclass(frozen=True)
class Protocol:
  """How a sweep splits the data: EmoMV's published splits, or repeated grouped k-fold cross-validation."""

  name: str = "published"
  cv_folds: int = 5
  cv_repeats: int = 2
  selection_fraction: float = 0.2

  def cells(self) -> list[tuple[int, int] | None]:
    """(repeat, fold) of each data split a config is trained on; [None] for the published protocol."""
    if self.name == "published":
      return [None]
    return [(r, f) for r in range(self.cv_repeats) for f in range(self.cv_folds)]

  def overrides(self, cell: tuple[int, int] | None) -> list[str]:
    if cell is None:
      return []
    r, f = cell
    return [
      f"data.cv_folds={self.cv_folds}",
      f"data.cv_fold={f}",
      f"data.cv_repeat={r}",
      f"data.selection_fraction={self.selection_fraction}",
      f"data.selection_seed={r}",
    ]

  @staticmethod
  def run_dir(workdir: str, slug: str, cell: tuple[int, int] | None, seed: int) -> str:
    if cell is None:
      return os.path.join(workdir, slug, f"seed_{seed}")
    return os.path.join(workdir, slug, f"cv{cell[0]}_fold{cell[1]}", f"seed_{seed}")


# (key in table.json, path in results.json, column header). Retrieval chance is the same in both directions.
METRICS = (
  ("video_to_music/map", ("retrieval", "video_to_music", "map"), "v->m mAP"),
  ("video_to_music/hit@1", ("retrieval", "video_to_music", "hit@1"), "v->m hit@1"),
  ("video_to_music/hit@5", ("retrieval", "video_to_music", "hit@5"), "v->m hit@5"),
  ("video_to_music/recall@10", ("retrieval", "video_to_music", "recall@10"), "v->m R@10"),
  ("music_to_video/map", ("retrieval", "music_to_video", "map"), "m->v mAP"),
  ("music_to_video/hit@1", ("retrieval", "music_to_video", "hit@1"), "m->v hit@1"),
  ("music_to_video/hit@5", ("retrieval", "music_to_video", "hit@5"), "m->v hit@5"),
  ("music_to_video/recall@10", ("retrieval", "music_to_video", "recall@10"), "m->v R@10"),
  ("classification/accuracy", ("classification", "accuracy"), "accuracy"),
  ("classification/f1", ("classification", "f1"), "F1"),
  ("classification/roc_auc", ("classification", "roc_auc"), "ROC-AUC"),
  ("alignment/centroid_gap", ("alignment", "centroid_gap"), "modality gap"),
  ("alignment/modality_probe_accuracy", ("alignment", "modality_probe_accuracy"), "modality probe"),
)


# ------------------------------------------------------------------------------------------------------------
# Configs.


def split_config_specs(values: Sequence[str]) -> list[str]:
  """Config specs from repeated `--configs` values, each possibly holding several separated by ';'."""
  return [s.strip() for v in values for s in v.split(";") if s.strip()]


ENSEMBLE = " (seed ensemble)"  # appended to a config's spec for its ensemble row (`evaluation/ensemble.py`)
# Appended to a config's spec for the rows of its runs ranked at one emotion weight (`evaluation/affect.py`): the
# key in results.json's `retrieval.by_emotion_weight`, the row's name, and its slug's suffix.
WEIGHT_ROWS = {
  " (cosine ranking)": ("0.0", "ranked by cosine (emotion weight 0)", "-cosine"),
  " (emotion ranking)": ("1.0", "ranked by emotion (emotion weight 1)", "-emotion"),
}
_SUFFIXES = {**{k: v[2] for k, v in WEIGHT_ROWS.items()}, ENSEMBLE: "-ensemble"}


def config_slug(spec: str) -> str:
  """`configs/emomv_baseline.py:c,retrieval_multi` -> `emomv_baseline-c-retrieval_multi`; an ensemble row's spec
  -> its config's slug + `-ensemble` (and likewise for the emotion-weight rows)."""
  for suffix, slug_suffix in _SUFFIXES.items():
    if spec.endswith(suffix):
      return config_slug(spec[: -len(suffix)]) + slug_suffix
  path, _, arg = spec.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  parts = [stem] + [p for p in re.split(r"[,:/\s]+", arg) if p]
  return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def make_config(
  spec: str, seed: int, *, data_dir: str | None = None, manual_dir: str | None = None, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
  """The config of one run of the sweep."""
  config = config_lib.load_config_file(spec)
  for override in overrides:
    config_lib.apply_override(config, override)
  config.seed = int(seed)
  if data_dir:
    config.data.data_dir = data_dir
  if manual_dir:
    config.data.manual_dir = manual_dir
  return config


# ------------------------------------------------------------------------------------------------------------
# Runs.


@dataclasses.dataclass
class RunResult:
  """One (config, seed) of the sweep."""

  spec: str
  seed: int
  workdir: str
  status: str  # 'trained' or 'reused'
  results: dict[str, Any]  # the evaluation used in the table (training's, or the protocol split's)
  seconds: float
  cell: tuple[int, int] | None = None  # (repeat, fold) of the cross-validation protocol


def run_one(
  spec: str,
  seed: int,
  run_dir: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: Sequence[str] = (),
  train_fn: TrainFn | None = None,
  cell: tuple[int, int] | None = None,
) -> RunResult:
  """Trains (or reads back) one run and returns the evaluation that goes into the table.

  `train_fn` replaces the training loop of a trained model (tests count calls through it; default `train.run`).
  """
  t_start = time.time()
  config = make_config(spec, seed, data_dir=data_dir, manual_dir=manual_dir, overrides=overrides)
  fn = train_fn if train_fn is not None and families.model(config).trained else train.run
  results, status = experiments.train_or_reuse(config, run_dir, train_fn=fn, on_mismatch="error")
  # Training evaluates on validation; the protocol reports EmoMV-A's classification on test.
  default = emomv.run_split(config)
  if results["classification"]["split"] != default:
    name = evaluate_lib.output_name(config.data.dataset, "best", default, default)
    eval_path = os.path.join(run_dir, "eval", name, "results.json")
    if os.path.isfile(eval_path):
      results = experiments.read_json(eval_path)
    else:
      results = evaluate_lib.evaluate_run(run_dir, checkpoint="best", data_dir=data_dir, manual_dir=manual_dir).results
  return RunResult(
    spec=spec,
    seed=seed,
    workdir=run_dir,
    status=status,
    results=results,
    seconds=round(time.time() - t_start, 2),
    cell=cell,
  )


def evaluate_elsewhere(
  run: RunResult,
  dataset: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: Sequence[str] = (),
) -> RunResult:
  """`run`'s model on another EmoMV set (its default split and gallery, standardised with the run's training
  statistics): `evaluate --dataset` for a network's best checkpoint, `peers.evaluate_on` for a peer. Written
  under the run's `eval/` and read back from there when present."""
  t_start = time.time()
  name = evaluate_lib.output_name(dataset, "best", emomv.default_split(dataset), emomv.default_split(dataset))
  path = os.path.join(run.workdir, "eval", name, "results.json")
  if os.path.isfile(path):
    cached = experiments.read_json(path)
    if cached.get("checkpoint_step") == run.results.get("checkpoint_step"):  # of the same best checkpoint
      return dataclasses.replace(run, status="reused", results=cached, seconds=0.0)
  config = make_config(run.spec, run.seed, data_dir=data_dir, manual_dir=manual_dir, overrides=overrides)
  if not families.model(config).trained:
    results = peers.evaluate_on(config, run.results, dataset, data_dir=data_dir, manual_dir=manual_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_json(path, results)
  else:
    results = evaluate_lib.evaluate_run(
      run.workdir, dataset=dataset, data_dir=data_dir, manual_dir=manual_dir, make_plots=False
    ).results
  return dataclasses.replace(run, status="trained", results=results, seconds=round(time.time() - t_start, 2))


# ------------------------------------------------------------------------------------------------------------
# The table.


def _chance_path(path: Sequence[str]) -> tuple[str, ...]:
  """Where results.json keeps the chance level of a metric (retrieval chance is the same in both directions)."""
  return ("chance", path[0], path[-1])


def _metric_path(key: str) -> tuple[str, ...]:
  return next(path for k, path, _ in METRICS if k == key)


def paired_differences(runs: Sequence[RunResult], reference: str, *, cv_folds: int) -> list[dict[str, Any]]:
  """Per other config, the reference minus it on each of `PAIRED_KEYS`, paired by (repeat, fold).

  Each (repeat, fold) gives one difference (of the means over seeds); `experiments.corrected_interval` turns
  them into a mean with a 95% interval, with the test/train size ratio of k-fold, 1 / (k - 1).
  """
  by: dict[str, dict[Any, list[dict[str, Any]]]] = {}
  for r in runs:
    by.setdefault(r.spec, {}).setdefault(r.cell, []).append(r.results)
  if reference not in by:
    raise errors.UsageError(f"--reference={reference!r} is not one of the sweep's configs: {sorted(by)}")
  out = []
  for spec, cells in by.items():
    if spec == reference:
      continue
    entry: dict[str, Any] = {"config": spec, "slug": config_slug(spec), "metrics": {}}
    for key in PAIRED_KEYS:
      diffs = []
      for cell, mine in by[reference].items():
        a = [get_path(x, _metric_path(key)) for x in mine]
        b = [get_path(x, _metric_path(key)) for x in cells.get(cell, [])]
        if a and b and None not in a and None not in b:
          diffs.append(float(np.mean(a)) - float(np.mean(b)))
      ratio = 1.0 / (cv_folds - 1)
      entry["metrics"][key] = experiments.corrected_interval(diffs, test_train_ratio=ratio) if len(diffs) > 1 else None
    out.append(entry)
  return out


def _chance_rows(evaluations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One chance row per (dataset, split); the mean over folds where the split differs per run (cross-validation)."""
  chance = []
  for dataset, split in dict.fromkeys((e["dataset"], e["classification"]["split"]) for e in evaluations):
    same = [e for e in evaluations if (e["dataset"], e["classification"]["split"]) == (dataset, split)]
    with_gallery = [e for e in same if "retrieval" in e]
    values = {}
    for key, path, _ in METRICS:
      found = [v for v in (get_path(e, _chance_path(path)) for e in same) if v is not None]
      values[key] = (found[0] if len(set(found)) == 1 else float(np.mean(found))) if found else None
    sizes = [e["classification"].get("num_pairs") for e in same]
    gallery_sizes = [e["retrieval"]["gallery_size"] for e in with_gallery]
    chance.append(
      {
        "dataset": dataset,
        "classification_split": split,
        "num_pairs": sizes[0] if len(set(sizes)) == 1 else round(float(np.mean(sizes)), 1),
        "gallery_split": with_gallery[0]["retrieval"]["split"] if with_gallery else None,
        "gallery_size": (gallery_sizes[0] if len(set(gallery_sizes)) == 1 else round(float(np.mean(gallery_sizes)), 1))
        if with_gallery
        else None,
        "metrics": values,
      }
    )
  return chance


def summarize(
  runs: Sequence[RunResult],
  *,
  seeds: Sequence[int],
  wall_seconds: float,
  protocol: Protocol | None = None,
  reference: str | None = None,
  trained_on: str | None = None,
) -> dict[str, Any]:
  """table.json: per config the mean and std over runs (seeds, and folds under cross-validation) of every
  metric, chance rows, the caption, and under cross-validation the paired differences to `reference`.
  `trained_on`: the set the models were trained on, when the runs' results are of another (cross-dataset)."""
  protocol = protocol or Protocol()
  rows = []
  for spec in dict.fromkeys(r.spec for r in runs):
    mine = [r for r in runs if r.spec == spec]
    first = mine[0].results
    cells = {}
    for key, path, _ in METRICS:
      values = [v for v in (get_path(r.results, path) for r in mine) if v is not None]
      cells[key] = mean_std(values) if values else None
    rows.append(
      {
        "config": spec,
        "slug": config_slug(spec),
        "model": first.get("model"),
        "description": first.get("description"),
        "dataset": first["dataset"],
        "classification_split": first["classification"]["split"],
        "gallery_split": first.get("retrieval", {}).get("split"),
        "selection_split": first.get("selection", {}).get("split"),
        "seeds": sorted({r.seed for r in mine}),
        "cells": [list(r.cell) for r in mine if r.cell is not None],
        "workdirs": [r.workdir for r in mine],
        "status": [r.status for r in mine],
        "seconds": [r.seconds for r in mine],
        "metrics": cells,
      }
    )
  chance = _chance_rows([r.results for r in runs])
  table = {
    "caption": (
      f"Trained on {trained_on}, evaluated on another set (standardised with {trained_on}'s train statistics; "
      f"the classification threshold is the one chosen on {trained_on}'s train split). "
      if trained_on
      else ""
    )
    + _caption(rows, chance, seeds, wall_seconds, runs, protocol, elsewhere=bool(trained_on)),
    "protocol": dataclasses.asdict(protocol) if protocol.name == "cv" else {"name": protocol.name},
    "std_ddof": STD_DDOF,
    "seeds": list(seeds),
    "wall_seconds": round(wall_seconds, 2),
    "metrics": [{"key": k, "header": h} for k, _, h in METRICS],
    "rows": rows,
    "chance": chance,
  }
  if trained_on:
    table["trained_on"] = trained_on
  if protocol.name == "cv":
    reference = reference or rows[0]["config"]
    table["paired"] = {
      "reference": reference,
      "level": 0.95,
      "rows": paired_differences(runs, reference, cv_folds=protocol.cv_folds),
    }
  return table


def _caption(
  rows: list[dict[str, Any]],
  chance: list[dict[str, Any]],
  seeds: Sequence[int],
  wall_seconds: float,
  runs: Sequence[RunResult],
  protocol: Protocol,
  *,
  elsewhere: bool = False,
) -> str:
  if protocol.name == "cv":
    return _cv_caption(chance, seeds, wall_seconds, runs, protocol)
  parts = []
  for c in chance:
    retrieval = (
      f", retrieval (both directions, all {c['gallery_size']} items ranked) on its `{c['gallery_split']}`"
      if c["gallery_split"]
      else ""
    )
    if not c["gallery_split"] and elsewhere:
      retrieval = " (its gallery was not built, its files being missing: no retrieval)"
    parts.append(
      f"{c['dataset']}: classification on the `{c['classification_split']}` split ({c['num_pairs']} pairs){retrieval}"
    )
  # Peers choose a hyper-parameter on train holdouts rather than a checkpoint; the caption says so apart.
  is_peer = [str(r.get("model") or "").startswith("peer_") for r in rows]
  selection = sorted({r["selection_split"] for r, p in zip(rows, is_peer) if r["selection_split"] and not p})
  peer_selection = sorted({r["selection_split"] for r, p in zip(rows, is_peer) if r["selection_split"] and p})
  reported = {c["classification_split"] for c in chance}
  same = (
    " Where the selection split is also the reported one (EmoMV-B and -C have no test split; the published "
    "protocol does the same), those numbers are slightly optimistic."
    if reported & set(selection) and not elsewhere  # selected on another set's split of that name
    else ""
  )
  trained = sum(r.status == "trained" for r in runs)
  single = sum(r.status in ("trained", "reused") for r in runs)
  done = (
    f"Evaluation wall time {wall_seconds:.1f} s ({trained} runs evaluated, {single - trained} read back)."
    if elsewhere
    else f"Sweep wall time {wall_seconds:.1f} s ({trained} runs trained, {single - trained} reused)."
  ) + _extra_rows_note(runs, per_fold=False)
  return (
    f"{'; '.join(parts)}. Checkpoints selected on {_selection_by_split(rows, is_peer, selection)}.{same} "
    + (f"Peers' hyper-parameters chosen on `{', '.join(peer_selection)}`. " if peer_selection else "")
    + "mAP and hit@K: label relevance (same emotion); R@10: "
    "the item's own counterpart in the top 10; modality gap: distance between the centroids of the unit video and "
    "music gallery embeddings; modality probe: held-out accuracy of a linear probe telling the two apart (0.5: "
    f"indistinguishable). Mean ± std over seeds {', '.join(map(str, seeds))} (std: sample "
    f"standard deviation, ddof={STD_DDOF}). {done}"
  )


_METRIC_NOTES = (
  "mAP and hit@K: label relevance (same emotion); R@10: the item's own counterpart in the top 10; modality gap: "
  "distance between the centroids of the unit video and music gallery embeddings; modality probe: held-out "
  "accuracy of a linear probe telling the two apart (0.5: indistinguishable)."
)


def _extra_rows_note(runs: Sequence[RunResult], *, per_fold: bool) -> str:
  """What the ensemble and emotion-weight rows are, when the table has any."""
  note = ""
  if any(r.status == "ensemble" for r in runs):
    note += (
      " A seed ensemble row scores with the mean of its config's seeds' match probabilities and ranking scores ("
      + ("one evaluation per fold: its std is over folds)." if per_fold else "one evaluation: no std).")
    )
  if any(r.status == "derived" for r in runs):
    note += (
      " A row ranked by cosine or by emotion is its config's runs ranked at that emotion weight instead of their "
      "own (label mAP, hit@1, R@10 only)."
    )
  return note


def _cv_caption(
  chance: list[dict[str, Any]], seeds: Sequence[int], wall_seconds: float, runs: Sequence[RunResult], p: Protocol
) -> str:
  c = chance[0]
  trained = sum(r.status == "trained" for r in runs)
  reused = sum(r.status == "reused" for r in runs)
  return (
    f"{c['dataset']}, cross-validation: train and validation pooled, {p.cv_repeats} x {p.cv_folds} folds grouped by "
    f"YouTube id (about {c['num_pairs']} pairs and a gallery of about {c['gallery_size']} segments per held-out "
    f"fold); each run trains on the other folds and selects its checkpoint on a grouped holdout of "
    f"{p.selection_fraction:.0%} of them; peers choose their hyper-parameter on holdouts of the same training "
    f"folds. {_METRIC_NOTES} Mean ± std over the {p.cv_repeats * p.cv_folds} folds"
    f" x seeds {', '.join(map(str, seeds))} (ddof={STD_DDOF}); chance is the mean over folds. Sweep wall time "
    f"{wall_seconds:.1f} s ({trained} runs trained, {reused} reused)." + _extra_rows_note(runs, per_fold=True)
  )


def _interval(stats: dict[str, Any] | None) -> str:
  if stats is None:
    return ""
  mark = " *" if stats["low"] > 0 or stats["high"] < 0 else ""
  return f"{stats['mean']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}]{mark}"


def format_paired(table: dict[str, Any]) -> str:
  """The paired-difference table of a cross-validation sweep (empty for the published protocol)."""
  paired = table.get("paired")
  if not paired:
    return ""
  headers = {m["key"]: m["header"] for m in table["metrics"]}
  ref = next(r for r in table["rows"] if r["config"] == paired["reference"])
  lines = [
    f"Paired difference of `{ref['slug']}` to each model per (repeat, fold): mean [95% interval] (corrected "
    "resampled t, Nadeau and Bengio 2003); * marks an interval that excludes 0.",
    "",
    "| minus | " + " | ".join(headers[k] for k in PAIRED_KEYS) + " |",
    "|" + "---|" * (len(PAIRED_KEYS) + 1),
  ]
  descriptions = {r["config"]: r["description"] or r["model"] for r in table["rows"]}
  for row in paired["rows"]:
    cells = [_interval(row["metrics"][k]) for k in PAIRED_KEYS]
    lines.append(f"| {descriptions[row['config']]} (`{row['slug']}`) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _selection_by_split(rows: list[dict[str, Any]], is_peer: list[bool], splits: list[str]) -> str:
  """'`a`' when every model selected on one split, else '`a` (model, model) and `b` (model)'."""
  if len(splits) <= 1:
    return f"`{splits[0] if splits else '?'}`"
  named = []
  for split in splits:
    models = [r["description"] or r["model"] for r, p in zip(rows, is_peer) if not p and r["selection_split"] == split]
    named.append(f"`{split}` ({', '.join(models)})")
  return " and ".join(named)


def _cell(stats: dict[str, Any] | None) -> str:
  if stats is None:
    return ""
  if stats["std"] is None:
    return f"{stats['mean']:.3f}"
  return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def format_markdown(table: dict[str, Any]) -> str:
  """table.md: the caption, then one row per model and a chance row per dataset and split."""
  headers = ["model", "config"] + [m["header"] for m in table["metrics"]]
  lines = [table["caption"], "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  keys = [m["key"] for m in table["metrics"]]
  for row in table["rows"]:
    lines.append(
      "| "
      + " | ".join([row["description"] or row["model"], f"`{row['slug']}`"] + [_cell(row["metrics"][k]) for k in keys])
      + " |"
    )
  for c in table["chance"]:
    label = "chance" if len(table["chance"]) == 1 else f"chance ({c['dataset']}, {c['classification_split']})"
    lines.append(
      "| "
      + " | ".join([label, ""] + ["" if c["metrics"][k] is None else f"{c['metrics'][k]:.3f}" for k in keys])
      + " |"
    )
  paired = format_paired(table)
  return "\n".join(lines) + "\n" + ("\n" + paired if paired else "")


def _check_sweep(
  specs: Sequence[str],
  reference: str | None,
  ensemble: bool,
  eval_datasets: Sequence[str],
  overrides: Sequence[str],
  protocol: Protocol,
  num_seeds: int,
) -> list[str]:
  """The configs' slugs, once every config, override and flag of the sweep is known to be usable.

  Raises:
    errors.UsageError: what is wrong, in one line.
  """
  if not specs:
    raise errors.UsageError("no configs: pass --configs=path/to/config.py[:arg] (repeatable)")
  if reference is not None and reference not in [*specs, *([s + ENSEMBLE for s in specs] if ensemble else [])]:
    raise errors.UsageError(
      f"--reference={reference!r} is not one of --configs {list(specs)} (with --ensemble, nor one + {ENSEMBLE!r})"
    )
  if reference is not None and reference.endswith(ENSEMBLE):
    if num_seeds < 2 or make_config(reference[: -len(ENSEMBLE)], 0).model != "emvgan":
      raise errors.UsageError(
        f"--reference={reference!r}: only an EMVGAN config trained with two or more --seeds has an ensemble row"
      )
  _check_eval_datasets(eval_datasets, specs, overrides, protocol)  # before hours of training
  cells = protocol.cells()
  for spec in specs:  # fail on a bad config or override before hours of training
    config = make_config(spec, 0, overrides=[*overrides, *protocol.overrides(cells[-1])])
    emomv.check_protocol(config)
  slugs = [config_slug(s) for s in specs]
  if len(set(slugs)) != len(slugs):
    raise errors.UsageError(f"--configs lists the same config twice: {specs}")
  return slugs


def run_sweep(
  specs: Sequence[str],
  seeds: Sequence[int],
  workdir: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: Sequence[str] = (),
  train_fn: TrainFn | None = None,
  protocol: Protocol | None = None,
  reference: str | None = None,
  eval_datasets: Sequence[str] = (),
  ensemble: bool = False,
  emotion_weight_rows: bool = False,
) -> dict[str, Any]:
  """Trains or reuses every (config, [fold,] seed), then writes and returns `table.json` (and `table.md`).

  Args:
    specs: config specs, `path/to/config.py[:arg]`.
    seeds: training seeds.
    workdir: the sweep directory.
    data_dir: TFDS data dir for every run (None: each config's).
    manual_dir: EmoMV copy for every run (None: each config's, then $EMOMV_DIR).
    overrides: `key=value` config overrides for every run.
    train_fn: replaces the training loop of trained models (default: `train.run`; tests count calls through it).
    protocol: the published splits (default) or cross-validation.
    reference: cross-validation: the spec the paired differences are of (None: the first).
    eval_datasets: other EmoMV sets to evaluate every trained model on, each with its own table
      (`table_<set>.md` / `.json`, e.g. `table_emomv_a.md`); the published protocol only.
    ensemble: add a row per trained config with a matched probability and a retrieval space (EMVGAN): its seeds
      scored as one model (`evaluation/ensemble.py`), per fold under cross-validation.
    emotion_weight_rows: add two rows per config whose runs chose an emotion weight: the same runs ranked by
      cosine only (weight 0) and by emotion only (weight 1).

  Returns:
    The table dict written to `workdir/table.json`.
  """
  t_start = time.time()
  protocol = protocol or Protocol()
  slugs = _check_sweep(specs, reference, ensemble, eval_datasets, overrides, protocol, len(seeds))  # before training
  cells = protocol.cells()
  runs, total = [], len(specs) * len(cells) * len(seeds)
  for spec, slug in zip(specs, slugs):
    for cell in cells:
      for seed in seeds:
        run_dir = protocol.run_dir(workdir, slug, cell, seed)
        print(f"[{len(runs) + 1}/{total}] {run_dir}", flush=True)
        run_overrides = [*overrides, *protocol.overrides(cell)]
        runs.append(
          run_one(
            spec,
            seed,
            run_dir,
            data_dir=data_dir,
            manual_dir=manual_dir,
            overrides=run_overrides,
            train_fn=train_fn,
            cell=cell,
          )
        )
  extra = _weight_rows(runs) if emotion_weight_rows else []
  if ensemble:
    extra += _ensembles(runs, workdir, protocol, data_dir=data_dir, manual_dir=manual_dir)
  # Each config's extra rows right after its own.
  runs = [r for spec in specs for suffix in ("", *_SUFFIXES) for r in [*runs, *extra] if r.spec == spec + suffix]
  table = summarize(runs, seeds=seeds, wall_seconds=time.time() - t_start, protocol=protocol, reference=reference)
  # Of this process (the runs' own are in their results.json): the data the sweep's flags name.
  table["provenance"] = provenance.collect(
    dataset=",".join(sorted({r.results["dataset"] for r in runs})), data_dir=data_dir, manual_dir=manual_dir
  )
  _write_table(table, workdir, "table")
  for dataset in eval_datasets:
    other = _table_elsewhere(
      runs, dataset, seeds, protocol, data_dir=data_dir, manual_dir=manual_dir, overrides=overrides
    )
    _write_table(other, workdir, "table_" + dataset.replace("/", "_"))
    table.setdefault("elsewhere", {})[dataset] = other
  return table


def _weight_rows(runs: Sequence[RunResult]) -> list[RunResult]:
  """For every run whose results.json ranks at a chosen emotion weight, its rankings at weight 0 and at 1 as
  `RunResult`s of their own: retrieval only (classification and alignment are the run's, in its own row)."""
  out = []
  for r in runs:
    retrieval = r.results.get("retrieval") or {}
    by = retrieval.get("by_emotion_weight") or {}
    for suffix, (key, label, _) in WEIGHT_ROWS.items():
      if key not in by:
        continue
      cls = r.results["classification"]
      results = {
        **{k: r.results[k] for k in ("dataset", "model", "chance") if k in r.results},
        "description": f"{r.results.get('description')}, {label}",
        "classification": {"split": cls["split"], "num_pairs": cls.get("num_pairs")},
        "retrieval": {"split": retrieval["split"], "gallery_size": retrieval["gallery_size"], **by[key]},
      }
      out.append(RunResult(r.spec + suffix, r.seed, r.workdir, "derived", results, 0.0, r.cell))
  return out


def _ensembles(
  runs: Sequence[RunResult],
  workdir: str,
  protocol: Protocol,
  *,
  data_dir: str | None,
  manual_dir: str | None,
) -> list[RunResult]:
  """One ensemble `RunResult` per (config, cell) of a trained model with a matched probability and a retrieval
  space, over its seeds; kept in `<workdir>/<slug>-ensemble/[cell/]results.json` and read back while its runs'
  checkpoints are the same."""
  out = []
  groups: dict[tuple[str, Any], list[RunResult]] = {}
  for r in runs:
    groups.setdefault((r.spec, r.cell), []).append(r)
  for (spec, cell), mine in groups.items():
    first = mine[0].results
    probability = first["classification"].get("threshold_chosen_on") == "fixed"
    trained = not str(first.get("model") or "").startswith("peer_")
    if len(mine) < 2 or "retrieval" not in first or not probability or not trained:
      continue
    t_start = time.time()
    folder = os.path.dirname(protocol.run_dir(workdir, config_slug(spec + ENSEMBLE), cell, 0))
    path = os.path.join(folder, "results.json")
    steps = [r.results.get("checkpoint_step") for r in mine]
    cached = experiments.read_json(path) if os.path.isfile(path) else None
    of = cached.get("ensemble", {}) if cached else {}
    if of.get("checkpoint_steps") == steps and of.get("workdirs") == [r.workdir for r in mine]:
      results = cached
    else:
      results = ensemble_lib.ensemble_results([r.workdir for r in mine], data_dir=data_dir, manual_dir=manual_dir)
      os.makedirs(folder, exist_ok=True)
      atomic.write_json(path, results)
    seconds = round(time.time() - t_start, 2)
    out.append(RunResult(spec + ENSEMBLE, -1, folder, "ensemble", results, seconds, cell))
  return out


def _check_eval_datasets(
  eval_datasets: Sequence[str], specs: Sequence[str], overrides: Sequence[str], protocol: Protocol
) -> None:
  if eval_datasets and protocol.name != "published":
    raise errors.UsageError("--eval_datasets goes with --protocol=published (each fold's model is a different one)")
  trained_on = {make_config(spec, 0, overrides=overrides).data.dataset for spec in specs} if eval_datasets else set()
  for dataset in eval_datasets:
    if dataset not in config_lib.DATASETS:
      raise errors.UsageError(f"--eval_datasets: {dataset!r} is not one of {', '.join(config_lib.DATASETS)}")
    if dataset in trained_on:
      raise errors.UsageError(f"--eval_datasets: {dataset} is what the configs train on; its table is table.md")


def _table_elsewhere(
  runs: Sequence[RunResult], dataset: str, seeds: Sequence[int], protocol: Protocol, **where: Any
) -> dict[str, Any]:
  """The table of every run evaluated on `dataset` (`where`: data_dir, manual_dir, overrides)."""
  t_start = time.time()
  elsewhere = []
  for i, run in enumerate(runs):
    print(f"[{i + 1}/{len(runs)}] {run.workdir} on {dataset}", flush=True)
    elsewhere.append(evaluate_elsewhere(run, dataset, **where))
  trained_on = ", ".join(sorted({r.results["dataset"] for r in runs}))
  return summarize(elsewhere, seeds=seeds, wall_seconds=time.time() - t_start, protocol=protocol, trained_on=trained_on)


def _write_table(table: dict[str, Any], workdir: str, stem: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  atomic.write_json(os.path.join(workdir, f"{stem}.json"), table)
  atomic.write_text(os.path.join(workdir, f"{stem}.md"), format_markdown(table))
