"""A trained run evaluated from its workdir: `evaluate_run(workdir)`, what `emvgan-evaluate` runs.

Restores the model and its train-split standardisation from a checkpoint (`runtime/restore.py`), runs the
evaluation protocol (`protocol.results`: the very code training ends with) on the run's own dataset or another
EmoMV set, and writes to `W/eval/<dataset>-<checkpoint>/`:
  results.json   the schema of training's `W/results.json`, plus an `evaluation` block (what was evaluated how)
  results.md     the readable table, chance beside each number
  *.png          precision-recall curves, PCA map of the gallery, training curves, confusion matrix (and
                 each as *.svg with `svg`)
  report.html    the page that shows them (`report.py`)
  embeddings.npz with `export_embeddings`: `name`, `emotion` (label ids), `video`, `music` (common-space
                 vectors of every gallery item; row i of each is item i); for a model with an emotion head also
                 `video_emotion_probs`, `music_emotion_probs` and the `emotion_weight` its ranking used
                 (`affect.similarity` of those reproduces every retrieval number)

Another EmoMV set is standardised with the TRAINING set's statistics (those saved in the checkpoint; the model
never saw the other set's). The pair split defaults to the protocol's: `test` on EmoMV-A, `validation` on B and
C, and `train-holdout` (with its gallery) for a run trained with `data.holdout_fraction > 0` evaluated on its own
dataset. Cosine-scored models (the retrieval baselines) classify pairs at the threshold chosen on the train split
of the dataset they were trained on, as in training.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import numpy as np

from emvgan_jax import atomic, config_lib
from emvgan_jax.data import emomv
from emvgan_jax.evaluation import affect, plots, protocol, report
from emvgan_jax.runtime import provenance, restore

DEFAULT_CHECKPOINT = "best"


@dataclasses.dataclass
class Evaluation:
  """What `evaluate_run` computed and where it wrote it."""

  results: dict[str, Any]
  out_dir: str
  embeddings: dict[str, np.ndarray] | None  # gallery: name, emotion, video, music (retrieval models only)
  pair_predictions: dict[str, Any]  # score, match, threshold on the pair split
  plots: dict[str, str]


def output_name(dataset: str, checkpoint: str, split: str, default: str) -> str:
  """`emomv_c-best`, with `-<split>` appended when the split is not the protocol's default."""
  name = f"{dataset.replace('/', '_')}-{checkpoint}"
  return name if split == default else f"{name}-{split}"


def _selection_block(run: restore.Run) -> dict[str, Any] | None:
  """Training's model-selection record, from the checkpoint's metadata (the split is training's, not ours)."""
  sel = run.meta.get("selection")
  if not sel:
    return None
  cfg = run.config
  return {
    "split": emomv.selection_split(cfg),
    "metric": cfg.train.selection_metric,
    "mode": cfg.train.selection_mode,
    "best_value": sel.get("best_value"),
    "best_step": sel.get("best_step"),
  }


def _evaluate(
  run: restore.Run,
  dataset: str,
  split: str,
  *,
  gallery: str,
  data_dir: str | None,
  manual_dir: str | None,
  emotion_weight: tuple[float, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray] | None]:
  """The results dict, the pair predictions and (retrieval models) the gallery embeddings of a restored run."""
  family, config = run.family, run.config
  data = emomv.load_eval_data(
    config,
    run.standardizer,
    dataset=dataset,
    split=split,
    data_dir=data_dir,
    manual_dir=manual_dir,
    need_train_split=not family.score_is_probability,
  )
  if gallery == "train":
    own, population = emomv.train_gallery(config, run.standardizer, data_dir=data_dir, manual_dir=manual_dir)
    data = dataclasses.replace(data, gallery=own, gallery_name=emomv.TRAIN_GALLERY, gallery_population=population)
  logging.info(
    "Evaluating %s (%s checkpoint, step %d) on %s: %s %d pairs, gallery %s",
    family.description,
    run.kind,
    run.step,
    dataset,
    data.pairs_name,
    len(data.pairs),
    len(data.gallery) if data.gallery is not None else "-",
  )
  evaluator = protocol.Evaluator(family, run.mesh, batch_size=config.train.eval_batch_size)
  results = protocol.results(
    config_lib.with_data(config, dataset=dataset),
    evaluator,
    run.state,
    data,
    checkpoint_step=run.step,
    selection=_selection_block(run),
    emotion_weight=emotion_weight[0],
    emotion_weight_fields=emotion_weight[1],
  )
  predictions = protocol.pair_predictions(evaluator, run.state, data.pairs, results["classification"]["threshold"])
  embeddings = None
  if family.has_retrieval and data.gallery is not None:
    embeddings = protocol.gallery_embeddings(evaluator, run.state, data.gallery)
  return results, predictions, embeddings


def evaluate_run(
  workdir: str,
  *,
  checkpoint: str = DEFAULT_CHECKPOINT,
  dataset: str | None = None,
  split: str | None = None,
  gallery: str = "gallery",
  data_dir: str | None = None,
  manual_dir: str | None = None,
  export_embeddings: bool = False,
  out_dir: str | None = None,
  make_plots: bool = True,
  run: restore.Run | None = None,
  emotion_weight: float | None = None,
  svg: bool = False,
) -> Evaluation:
  """Restores a run and evaluates it; writes results.json, results.md, plots and optionally embeddings.npz.

  Args:
    workdir: the training workdir.
    checkpoint: 'best', 'latest' or a step number.
    dataset: the EmoMV set to evaluate on (None: the run's own).
    split: the pair split (None: `default_split`).
    gallery: 'gallery' (the dataset's), or 'train': one rebuilt from the segments the run trained on.
    data_dir: TFDS data dir (None: the run's).
    manual_dir: EmoMV copy (None: the run's, then $EMOMV_DIR).
    export_embeddings: also write `embeddings.npz` (retrieval models).
    out_dir: where to write (None: `workdir/eval/<output_name>`).
    make_plots: write the PNG plots and report.html (with `svg`, each plot as SVG too, which the page embeds).
    run: an already restored `runtime.restore.Run` of this workdir and checkpoint (skips restoring).
    emotion_weight: rank the gallery with this emotion weight (`affect.py`; None: the run's, from results.json).

  Returns:
    The `Evaluation`.

  Raises:
    emvgan_jax.errors.Error (a `DataError`, a `CheckpointError`), tfds_emomv.emomv.files.EmoMVFormatError: with
      advice (the commands print them as one line).
  """
  t_start = time.time()
  run = run or restore.load_run(workdir, checkpoint)
  config = run.config
  dataset = dataset or config.data.dataset
  default = emomv.run_split(config, dataset)
  split = split or default
  weight = affect.run_weight(workdir) if emotion_weight is None else (emotion_weight, {})
  results, predictions, embeddings = _evaluate(
    run, dataset, split, gallery=gallery, data_dir=data_dir, manual_dir=manual_dir, emotion_weight=weight
  )
  if embeddings is not None and "video_emotion_probs" in embeddings:  # the weight its ranking used, with it
    embeddings["emotion_weight"] = np.float32(results["retrieval"]["emotion_weight"])
  if embeddings is None and export_embeddings:
    logging.warning("%s has no retrieval embedding space: no embeddings.npz", run.family.description)

  name = output_name(dataset, checkpoint, split, default) + ("" if gallery == "gallery" else f"-{emomv.TRAIN_GALLERY}")
  out_dir = out_dir or os.path.join(workdir, "eval", name)
  os.makedirs(out_dir, exist_ok=True)
  block = _evaluation_block(results, run, workdir, checkpoint, dataset, split, default)
  results["evaluation"] = {**block, "seconds": round(time.time() - t_start, 2)}
  results["provenance"] = provenance.collect(
    dataset=dataset, data_dir=data_dir or config.data.data_dir, manual_dir=manual_dir or emomv.manual_dir_from(config)
  )
  written = _write_outputs(
    results,
    out_dir,
    workdir=workdir,
    checkpoint=checkpoint,
    run=run,
    dataset=dataset,
    embeddings=embeddings if export_embeddings else None,
    plot_embeddings=embeddings,
    predictions=predictions if make_plots else None,
    make_plots=make_plots,
    svg=svg,
  )
  return Evaluation(
    results=results, out_dir=out_dir, embeddings=embeddings, pair_predictions=predictions, plots=written
  )


def _evaluation_block(
  results: dict[str, Any], run: restore.Run, workdir: str, checkpoint: str, dataset: str, split: str, default: str
) -> dict[str, Any]:
  """results.json's `evaluation` block: which checkpoint, statistics and splits the numbers come from."""
  block = {
    "workdir": os.path.abspath(workdir),
    "checkpoint": checkpoint,
    "checkpoint_kind": run.kind,
    "trained_on": run.config.data.dataset,
    "standardization": f"train split of {run.config.data.dataset} (from the checkpoint)",
    "pair_split": split,
    "gallery": results.get("retrieval", {}).get("split"),
    "default_pair_split": default,
  }
  if run.family.has_retrieval and "retrieval" not in results:  # said in the results, not only in a log line
    block["retrieval"] = (
      f"not computed: {dataset} has no gallery built (a partial build skipped it for its missing files)"
    )
  return block


def _write_outputs(
  results: dict[str, Any],
  out_dir: str,
  *,
  workdir: str,
  checkpoint: str,
  run: restore.Run,
  dataset: str,
  embeddings: dict[str, np.ndarray] | None,
  plot_embeddings: dict[str, np.ndarray] | None,
  predictions: dict[str, Any] | None,
  make_plots: bool,
  svg: bool,
) -> dict[str, str]:
  """results.json, results.md, embeddings.npz (when `embeddings` is given), the plots (with `svg`, SVG twins too)
  and report.html, written by process 0 alone; returns the plots."""
  if jax.process_index() != 0:
    return {}
  atomic.write_json(os.path.join(out_dir, "results.json"), results)
  trained_on = run.config.data.dataset
  note = (
    # Relative to this folder: the page and its folder may be copied or published without naming this machine's
    # paths (results.json's `evaluation.workdir` keeps the absolute one).
    f"Checkpoint `{checkpoint}` (step {run.step}) of the run in `{os.path.relpath(workdir, out_dir)}`, trained on "
    f"{trained_on}; features standardised with the statistics of its train split."
  )
  atomic.write_text(os.path.join(out_dir, "results.md"), f"{protocol.format_table(results)}\n\n{note}\n")
  if embeddings is not None:
    with atomic.replacing(os.path.join(out_dir, "embeddings.npz")) as tmp:
      np.savez(tmp, **embeddings)
  if not make_plots:
    return {}
  title = f"{run.family.description} on {dataset} ({checkpoint} checkpoint, step {run.step})"
  written = plots.write_training_plots(
    workdir,
    embeddings=plot_embeddings,
    pair_predictions=predictions,
    results=results,
    out_dir=out_dir,
    title=title,
    svg=svg,
  )
  examples = None
  if plot_embeddings is not None:
    weight = results.get("retrieval", {}).get("emotion_weight", 0.0)
    examples = report.retrieved_examples(plot_embeddings, emotion_weight=weight)
  report.write_report(out_dir, results, plots=written, examples=examples, note=note)
  return written
