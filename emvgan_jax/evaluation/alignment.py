"""How well the common space closes the modality gap (docs/models.md, section 4.5): the `alignment` block.

EMVGAN's adversarial term is meant to make music and video embeddings indistinguishable. These numbers say
whether it does, on the gallery (item i = the video and the music of one segment), from unit-normalised
embeddings:
  centroid_gap              ||mean(video) - mean(music)||: 0 when the two clouds share a centre (at most 2)
  modality_probe_accuracy   held-out accuracy of a linear probe that predicts an embedding's modality
                            (0.5: indistinguishable; 1.0: linearly separable)
  true_pair_cosine          mean cosine of item i's video with item i's music
  random_pair_cosine        mean cosine of item i's video with item j's music, over all i != j
  per_emotion_centroid_gap  per emotion, the distance between its video centroid and its music centroid
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emvgan_jax.ops import l2_normalize

PROBE_FOLDS = 5
PROBE_C = 1.0  # scikit-learn's default inverse regularisation; the probe is a measurement, not a tuned model


def centroid_gap(video: np.ndarray, music: np.ndarray) -> float:
  """Distance between the centroids of the unit-normalised video and music embeddings."""
  v, m = l2_normalize(np.asarray(video, np.float64)), l2_normalize(np.asarray(music, np.float64))
  return float(np.linalg.norm(v.mean(axis=0) - m.mean(axis=0)))


def pair_cosines(video: np.ndarray, music: np.ndarray) -> tuple[float, float]:
  """(mean cosine of true pairs, mean cosine of all pairs i != j) of a gallery whose item i is (video[i], music[i])."""
  v, m = l2_normalize(np.asarray(video, np.float64)), l2_normalize(np.asarray(music, np.float64))
  sim = v @ m.T
  n = len(sim)
  true = float(np.mean(np.diag(sim)))
  random = float((sim.sum() - np.trace(sim)) / (n * n - n)) if n > 1 else float("nan")
  return true, random


def fit_logistic(x: np.ndarray, y: np.ndarray, *, c: float = PROBE_C, tol: float = 1e-10) -> np.ndarray:
  """L2-regularised logistic regression, scikit-learn's objective (`LogisticRegression(C=c)`: the intercept is not
  penalised), solved by Newton's method in float64; returns (D + 1,) weights, the intercept last.

  Minimises 0.5 ||w||^2 + c * sum_i log(1 + exp(-s_i (w . x_i + b))) with s_i = +-1 for y_i = 1 / 0. The objective
  is strictly convex, so the minimum is unique; each Newton step is halved until the objective decreases.
  A few dozen rows and dimensions take milliseconds, without scikit-learn's import (1.6 s on 2 cores in
  `python -X importtime -m emvgan_jax.main ...`) in every training run.
  """
  xb = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)
  sign = np.where(np.asarray(y) == 1, 1.0, -1.0)
  penalty = np.ones(xb.shape[1])
  penalty[-1] = 0.0  # the intercept
  if not np.all(np.isfinite(xb)):
    raise ValueError("the probe's inputs hold NaN or infinite values")

  def objective(w: np.ndarray) -> float:
    return float(0.5 * np.sum(penalty * w * w) + c * np.sum(np.logaddexp(0.0, -sign * (xb @ w))))

  w = np.zeros(xb.shape[1])
  value = objective(w)
  limit = tol * (1.0 + c * len(xb))  # the gradient is a sum over rows: its scale grows with them
  for _ in range(100):
    margin = sign * (xb @ w)
    p = 0.5 * (1.0 + np.tanh(-0.5 * margin))  # sigmoid(-margin), without overflow
    grad = penalty * w - c * (xb.T @ (sign * p))
    if np.max(np.abs(grad)) < limit:
      break
    hess = np.diag(penalty) + c * (xb.T * (p * (1.0 - p))) @ xb
    hess[-1, -1] += 1e-12  # all rows of one class: the intercept's curvature vanishes
    delta = np.linalg.solve(hess, grad)
    step, accepted = 1.0, False
    while step > 1e-8 and not accepted:
      trial_w = w - step * delta
      trial = objective(trial_w)
      accepted = trial <= value
      step *= 0.5
    if not accepted:  # no step lowers the objective any more: at the minimum to rounding
      break
    w, value = trial_w, trial
  return w


def modality_probe_accuracy(video: np.ndarray, music: np.ndarray, *, folds: int = PROBE_FOLDS) -> float:
  """Held-out accuracy of a logistic-regression probe that tells video (1) from music (0) embeddings.

  `folds`-fold cross-validation grouped by item, so an item's video and music are always in the same fold (the
  probe cannot answer by recognising the item); item i is held out in fold i mod `folds` (the partition that
  scikit-learn's `GroupKFold` makes of equal-sized groups), so the number is deterministic. A gallery of fewer
  items than `folds` is left out one item at a time; one of a single item has no held-out accuracy (NaN). The
  probe is `fit_logistic`, scikit-learn's `LogisticRegression(C=PROBE_C)` objective solved to its minimum
  (tests/evaluation/test_alignment.py checks the accuracy against scikit-learn's cross-validation).
  scikit-learn's default tolerance stops short of it, so earlier runs' values, fitted with scikit-learn, can
  differ in the third decimal on wide embeddings.

  Raises:
    ValueError: NaN or infinite embeddings.
  """
  v, m = l2_normalize(np.asarray(video, np.float64)), l2_normalize(np.asarray(music, np.float64))
  n = len(v)
  if n < 2:
    return float("nan")
  folds = min(folds, n)
  correct = 0
  for k in range(folds):
    held = np.arange(n) % folds == k
    x = np.concatenate([v[~held], m[~held]])
    y = np.concatenate([np.ones(n - held.sum(), np.int64), np.zeros(n - held.sum(), np.int64)])
    w = fit_logistic(x, y)
    for rows, label in ((v[held], 1), (m[held], 0)):
      predicted = (rows @ w[:-1] + w[-1] > 0).astype(np.int64)
      correct += int(np.sum(predicted == label))
  return correct / (2 * n)


def per_emotion_gaps(
  video: np.ndarray, music: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, float]:
  """Per emotion present in the gallery, the distance between its video and its music centroid."""
  labels = np.asarray(labels).reshape(-1)
  v, m = l2_normalize(np.asarray(video, np.float64)), l2_normalize(np.asarray(music, np.float64))
  out = {}
  for c in sorted(set(labels.tolist())):
    rows = labels == c
    name = class_names[c] if 0 <= c < len(class_names) else str(c)
    out[name] = float(np.linalg.norm(v[rows].mean(axis=0) - m[rows].mean(axis=0)))
  return out


def alignment_metrics(
  video: np.ndarray, music: np.ndarray, labels: np.ndarray, *, class_names: Sequence[str], probe: bool = True
) -> dict[str, Any]:
  """The `alignment` block of results.json for a gallery (see the module docstring).

  Args:
    video, music: (N, D) embeddings; item i is (video[i], music[i]).
    labels: (N,) emotion ids.
    class_names: names of the emotion ids.
    probe: also fit the modality probe (the costly part: several logistic regressions).
  """
  true, random = pair_cosines(video, music)
  out: dict[str, Any] = {"centroid_gap": centroid_gap(video, music)}
  if probe:
    out["modality_probe_accuracy"] = modality_probe_accuracy(video, music)
  out.update(
    {
      "true_pair_cosine": true,
      "random_pair_cosine": random,
      "per_emotion_centroid_gap": per_emotion_gaps(video, music, labels, class_names),
    }
  )
  return out
