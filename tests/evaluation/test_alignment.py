"""The alignment block: modality gap, probe, pair cosines and per-emotion gaps, against hand-worked values and
scikit-learn."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict

from emvgan_jax.evaluation import alignment

NAMES = ("exciting", "fear", "tense", "sad", "relax")


def test_centroid_gap_and_pair_cosines_by_hand():
  # Unnormalised on purpose: every number is computed on unit vectors.
  video = np.array([[2.0, 0.0], [0.0, 3.0]])
  music = np.array([[5.0, 0.0], [0.5, 0.0]])
  # Unit centroids: video (0.5, 0.5), music (1, 0): the gap is sqrt(0.25 + 0.25).
  assert alignment.centroid_gap(video, music) == pytest.approx(np.sqrt(0.5))
  true, random = alignment.pair_cosines(video, music)
  assert true == pytest.approx((1.0 + 0.0) / 2)  # cos(v0, m0) = 1, cos(v1, m1) = 0
  assert random == pytest.approx((1.0 + 0.0) / 2)  # cos(v0, m1) = 1, cos(v1, m0) = 0
  assert alignment.centroid_gap(video, video) == 0.0


def test_per_emotion_gaps_by_hand():
  video = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  music = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
  gaps = alignment.per_emotion_gaps(video, music, np.array([0, 0, 3]), NAMES)
  # exciting: video centroid (1, 0), music centroid (0.5, 0.5); sad: (0, 1) vs (0, -1).
  assert gaps == {"exciting": pytest.approx(np.sqrt(0.5)), "sad": pytest.approx(2.0)}


@pytest.mark.parametrize("n, d", [(100, 8), (96, 8), (23, 8), (300, 64)])
def test_probe_equals_scikit_learn_cross_validation(n, d):
  rng = np.random.default_rng(n)
  video = rng.normal(size=(n, d)) + 0.4 / np.sqrt(d / 8)
  music = rng.normal(size=(n, d))
  x = np.concatenate(
    [video / np.linalg.norm(video, axis=1, keepdims=True), music / np.linalg.norm(music, axis=1, keepdims=True)]
  )
  y = np.r_[np.ones(n), np.zeros(n)]
  groups = np.r_[np.arange(n), np.arange(n)]
  # Pooled over the folds (folds of unequal size are not averaged as equals).
  probe = LogisticRegression(tol=1e-10, max_iter=10_000)  # to the minimum, as fit_logistic solves it
  predicted = cross_val_predict(probe, x, y, groups=groups, cv=GroupKFold(5))
  assert alignment.modality_probe_accuracy(video, music) == pytest.approx(np.mean(predicted == y), abs=1e-12)


def test_logistic_fit_equals_scikit_learn():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(60, 5))
  y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0.3).astype(int)
  want = LogisticRegression(C=0.7, tol=1e-12, max_iter=10_000).fit(x, y)
  w = alignment.fit_logistic(x, y, c=0.7)
  np.testing.assert_allclose(w[:-1], want.coef_[0], atol=1e-6)
  np.testing.assert_allclose(w[-1], want.intercept_[0], atol=1e-6)


def test_probe_refuses_non_finite_embeddings():
  video = np.ones((10, 4))
  video[3, 2] = np.nan
  with pytest.raises(ValueError, match="NaN or infinite"):
    alignment.modality_probe_accuracy(video, np.zeros((10, 4)) + 0.5)


def test_probe_at_the_extremes():
  rng = np.random.default_rng(1)
  same = rng.normal(size=(200, 6))
  # One distribution for both modalities: indistinguishable, about 0.5.
  assert abs(alignment.modality_probe_accuracy(same[:100], same[100:]) - 0.5) < 0.1
  # Disjoint half-spaces: separable.
  video, music = np.abs(same[:100]), -np.abs(same[100:])
  assert alignment.modality_probe_accuracy(video, music) == 1.0
  assert alignment.modality_probe_accuracy(video[:3], music[:3]) == 1.0  # 3 items: leave one out
  assert np.isnan(alignment.modality_probe_accuracy(video[:1], music[:1]))


def test_block_has_every_number_and_skips_the_probe_when_asked():
  rng = np.random.default_rng(2)
  v, m, labels = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)), rng.integers(0, 5, 20)
  full = alignment.alignment_metrics(v, m, labels, class_names=NAMES)
  assert set(full) == {
    "centroid_gap",
    "modality_probe_accuracy",
    "true_pair_cosine",
    "random_pair_cosine",
    "per_emotion_centroid_gap",
  }
  quick = alignment.alignment_metrics(v, m, labels, class_names=NAMES, probe=False)
  assert "modality_probe_accuracy" not in quick and quick["centroid_gap"] == full["centroid_gap"]
