"""A seed ensemble: runs of one config that differ only in their training seed, scored as one model.

A pair's matched probability is the mean of the runs' probabilities, and a gallery is ranked by the mean of the
runs' scores (`affect.similarity`, each run at its own emotion weight); the numbers are then those of the
evaluation protocol (`protocol.py`) on the runs' own reported split and gallery. Each run's features are
standardised with its own train statistics, as in `evaluate`. An ensemble has no single common space, so it has
no alignment block.

The peers are deterministic and EMVGAN's seeds spread (hit@1 by 0.04-0.05 over five seeds on EmoMV-C); the mean of
k seeds' scores is the plain way to pay k times the compute for less of that spread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from emvgan_jax import errors
from emvgan_jax.data import emomv
from emvgan_jax.evaluation import affect, metrics, protocol, retrieval
from emvgan_jax.runtime import restore


def _scores(run: restore.Run, data: emomv.RunData) -> tuple[np.ndarray, np.ndarray]:
  """(pair probabilities on `data.pairs`, the (video x music) gallery scores) of one run."""
  evaluator = protocol.Evaluator(run.family, run.mesh, batch_size=run.config.train.eval_batch_size)
  pairs = evaluator.predict(run.state, data.pairs, keys=("score",))["score"]
  g = evaluator.predict(run.state, data.gallery, keys=evaluator.gallery_keys)
  probs = (g.get("video_emotion_probs"), g.get("music_emotion_probs"))
  weight = retrieval.emotion_weight_of(run, None)  # the run's own; 0 without an emotion head
  return np.asarray(pairs, np.float64), affect.similarity(g["video_embedding"], g["music_embedding"], *probs, weight)


def ensemble_results(
  workdirs: Sequence[str], *, data_dir: str | None = None, manual_dir: str | None = None
) -> dict[str, Any]:
  """The results dict (the schema of `results.json`, without alignment) of the runs in `workdirs` as one model.

  Raises:
    errors.UsageError: fewer than two runs, runs of different configs, or of a model without a matched
      probability and a retrieval space (what an ensemble averages).
  """
  if len(workdirs) < 2:
    raise errors.UsageError(f"an ensemble needs at least two runs, got {len(workdirs)}")
  runs = [restore.load_run(w) for w in workdirs]
  first = runs[0]
  if not (first.family.has_retrieval and first.family.score_is_probability):
    raise errors.UsageError(f"{first.family.description}: an ensemble averages match probabilities and rankings")

  def without_seed(run: restore.Run) -> dict[str, Any]:
    d = json.loads(run.config.to_json_best_effort())
    d.pop("seed", None)
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("data_dir", "manual_dir")}  # where, not what
    return d

  for run, workdir in zip(runs[1:], workdirs[1:]):
    if without_seed(run) != without_seed(first):
      raise errors.UsageError(
        f"an ensemble is of runs that differ only in their seed: {workdir} and {workdirs[0]} differ in more "
        "(another config, fold or dataset)"
      )
  pair_scores, gallery_scores, data = [], [], None
  for run in runs:
    data = emomv.load_eval_data(
      run.config,
      run.standardizer,
      dataset=run.config.data.dataset,
      split=emomv.run_split(run.config),
      data_dir=data_dir,
      manual_dir=manual_dir,
      need_train_split=False,
    )
    p, sim = _scores(run, data)
    pair_scores.append(p)
    gallery_scores.append(sim)
  score = np.mean(pair_scores, axis=0)
  cls = metrics.classification_metrics(score, data.pairs.match, threshold=0.5)
  seeds = sorted(int(r.config.seed) for r in runs)
  return {
    "dataset": first.config.data.dataset,
    "model": first.family.model_name,
    "description": f"{first.family.description} (ensemble of {len(runs)} seeds)",
    "seed": seeds,
    "classification": {
      "split": data.pairs_name,
      "num_pairs": len(data.pairs),
      "threshold": 0.5,
      "threshold_chosen_on": "fixed",
      **{k: float(cls[k]) for k in protocol.CLASSIFICATION_KEYS},
    },
    "retrieval": {
      "split": data.gallery_name,
      "gallery_size": len(data.gallery),
      **protocol.retrieval_results_from_similarity(np.mean(gallery_scores, axis=0), data.gallery.video_emotion),
    },
    "chance": protocol.chance_levels(data.pairs, data.gallery),
    "ensemble": {"workdirs": list(workdirs), "checkpoint_steps": [int(r.step) for r in runs]},
  }
