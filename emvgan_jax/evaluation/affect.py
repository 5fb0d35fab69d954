"""Emotion-aware ranking: a pair's score mixes the cosine of its two common-space vectors with how much their
emotion predictions agree,

    s_w(v, m) = (1 - w) * cos(z_v, z_m) + w * <p(e | z_v), p(e | z_m)>,

where `p(e | z)` is the softmax of the model's shared emotion head (`Family.emotion_probabilities`). w = 0 is
plain cosine ranking (what EMVGAN ranked by before this module); w = 1 ranks by emotion alone, the rule of the
logistic-regression peer (`evaluation/peers.py`) applied to EMVGAN's own space. The weight between trades
"more the same mood" (label mAP) against "more this exact clip" (the counterpart's Recall@K and rank).

It stays one exact search for every w. A gallery item is stored once as `[z, p, sqrt(1 - |p|^2)]` (z unit-norm;
the last coordinate gives every row the same norm) and a query at weight w is `[(1 - w) z, w p, 0]`: their inner
product is `s_w`, and a cosine search ranks the rows exactly as it (`gallery_rows`, `query_rows`, `score`).
(Scaling both sides by square roots, `[sqrt(1 - w) z, sqrt(w) p]`, gives the same scores but would tie the
stored gallery to one w.)

A run's weight is chosen on its selection holdout (part of train, never the split it reports), from `WEIGHTS`,
as the one with the best mean label mAP over both directions (ties: the smaller weight).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from emvgan_jax import errors
from emvgan_jax.evaluation import metrics
from emvgan_jax.ops import l2_normalize

WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 11), 2))  # 0.0, 0.1, ..., 1.0


def check_weight(weight: float, what: str = "--emotion_weight") -> float:
  """`weight` as a float in [0, 1].

  Raises:
    errors.UsageError: it is not a number in [0, 1] (the message names `what`).
  """
  try:
    value = float(weight)
  except (TypeError, ValueError):
    raise errors.UsageError(f"{what} must be a number in [0, 1], got {weight!r}") from None
  if not 0.0 <= value <= 1.0:
    raise errors.UsageError(f"{what} must be in [0, 1] (0: cosine only, 1: emotion only), got {value}")
  return value


def gallery_rows(z: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
  """Stored gallery vectors `[z / |z|, p, sqrt(1 - |p|^2)]`, float32: one gallery serves queries of every weight.

  The last coordinate gives every row the same norm, sqrt(2) (|p| <= 1 for probabilities), so that a cosine
  search (`search.GalleryIndex`, which normalises what it holds) ranks them exactly as their inner products with
  a query: the reduction of inner-product to cosine search of Bachrach et al. (RecSys 2014). `score` turns the
  cosine back into `s_w`.
  """
  p = np.asarray(probabilities, np.float64)
  pad = np.sqrt(np.clip(1.0 - np.sum(p * p, axis=1, keepdims=True), 0.0, None))
  return np.concatenate([l2_normalize(np.asarray(z, np.float64)), p, pad], axis=1).astype(np.float32)


def query_rows(z: np.ndarray, probabilities: np.ndarray, weight: float) -> np.ndarray:
  """Query vectors `[(1 - w) z / |z|, w p, 0]`, float32: their inner product with `gallery_rows` is `s_w`."""
  w = check_weight(weight, "emotion weight")
  unit = l2_normalize(np.asarray(z, np.float64))
  p = np.asarray(probabilities, np.float64)
  return np.concatenate([(1.0 - w) * unit, w * p, np.zeros((len(p), 1))], axis=1).astype(np.float32)


def score(cosines: np.ndarray, queries: np.ndarray) -> np.ndarray:
  """`s_w` from a cosine search of `query_rows` against `gallery_rows`: cosine x |query| x sqrt(2)."""
  norms = np.linalg.norm(np.asarray(queries, np.float64), axis=-1, keepdims=True) * np.sqrt(2.0)
  return (np.asarray(cosines, np.float64) * norms).astype(np.float32)


def similarity(
  video_z: np.ndarray,
  music_z: np.ndarray,
  video_p: np.ndarray | None,
  music_p: np.ndarray | None,
  weight: float,
) -> np.ndarray:
  """The (videos x music) matrix of `s_w` in float64 (what the retrieval metrics rank by); at w = 0 the cosine,
  and the probabilities may be None (a model without an emotion head)."""
  w = check_weight(weight, "emotion weight")
  cos = metrics.cosine_similarity_np(video_z, music_z)
  if w == 0.0:
    return cos
  if video_p is None or music_p is None:
    raise ValueError(f"emotion weight {w} needs both modalities' emotion probabilities")
  agree = np.asarray(video_p, np.float64) @ np.asarray(music_p, np.float64).T
  return (1.0 - w) * cos + w * agree


def choose_weight(
  video_z: np.ndarray, music_z: np.ndarray, video_p: np.ndarray, music_p: np.ndarray, labels: np.ndarray
) -> tuple[float, dict[str, float]]:
  """The weight of `WEIGHTS` with the best mean label mAP (both directions) on a gallery whose item i is
  (video i, music i) with emotion `labels[i]`; and every weight's mean mAP (keys as `weight_key`)."""
  scores = {}
  for w in WEIGHTS:
    sim = similarity(video_z, music_z, video_p, music_p, w)
    v2m = metrics.retrieval_metrics(sim, labels, labels)["map"]
    m2v = metrics.retrieval_metrics(sim.T, labels, labels)["map"]
    scores[weight_key(w)] = float(0.5 * (v2m + m2v))
  best = max(WEIGHTS, key=lambda w: (scores[weight_key(w)], -w))  # ties: the smaller weight
  return best, scores


def weight_key(weight: float) -> str:
  """How a weight is named in results.json ('0.0', '0.3', '1.0')."""
  return f"{float(weight):.1f}" if round(float(weight), 1) == float(weight) else f"{float(weight):g}"


def run_weight(workdir: str) -> tuple[float, dict[str, Any]]:
  """The emotion weight a finished run chose, with how it chose it (its results.json's `retrieval.emotion_weight*`
  fields); 0 for a run without one (not finished, trained before emotion-aware ranking, or without an emotion head).

  Raises:
    errors.Error: results.json is damaged.
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return 0.0, {"emotion_weight_chosen_on": "none (the run has no results.json yet: cosine ranking)"}
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
    retrieval = results.get("retrieval") or {}
  except (ValueError, UnicodeDecodeError, AttributeError) as e:
    raise errors.Error(f"{path} is damaged ({type(e).__name__}: {e}); train the run again to rewrite it") from None
  if "emotion_weight" not in retrieval:
    return 0.0, {"emotion_weight_chosen_on": "none (the run's results.json has none: cosine ranking)"}
  weight = check_weight(retrieval["emotion_weight"], f"{path}: retrieval.emotion_weight")
  fields = {k: v for k, v in retrieval.items() if k.startswith("emotion_weight_")}
  # Chosen for the run's best checkpoint: a tool that ranks another checkpoint with it says so.
  fields["emotion_weight_chosen_for_step"] = results.get("checkpoint_step")
  return weight, fields
