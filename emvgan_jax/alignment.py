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


def modality_probe_accuracy(video: np.ndarray, music: np.ndarray, *, folds: int = PROBE_FOLDS) -> float:
  """Held-out accuracy of a logistic-regression probe that tells video (1) from music (0) embeddings.

  `folds`-fold cross-validation grouped by item, so an item's video and music are always in the same fold (the
  probe cannot answer by recognising the item); the folds are contiguous blocks of items, so the number is
  deterministic. A gallery of fewer items than `folds` is left out one item at a time; one of a single item has
  no held-out accuracy (NaN).
  """
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.model_selection import GroupKFold  # pylint: disable=g-import-not-at-top

  v, m = l2_normalize(np.asarray(video, np.float64)), l2_normalize(np.asarray(music, np.float64))
  n = len(v)
  if n < 2:
    return float("nan")
  folds = min(folds, n)
  x = np.concatenate([v, m])
  y = np.concatenate([np.ones(n, np.int64), np.zeros(n, np.int64)])
  groups = np.concatenate([np.arange(n), np.arange(n)])
  correct = 0
  for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
    probe = LogisticRegression(C=PROBE_C, max_iter=1000).fit(x[train], y[train])
    correct += int(np.sum(probe.predict(x[test]) == y[test]))
  return correct / len(x)


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
