import numpy as np
import pytest

from emvgan_jax import errors
from emvgan_jax.evaluation import affect, metrics, protocol, search


def _gallery(n=12, d=6, k=5, seed=0):
  rng = np.random.default_rng(seed)
  zv, zm = rng.normal(size=(n, d)), rng.normal(size=(n, d))
  pv, pm = rng.dirichlet(np.ones(k), size=n), rng.dirichlet(np.ones(k), size=n)
  return zv, zm, pv, pm, rng.integers(0, k, size=n)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_the_score_is_the_mix_of_cosine_and_emotion_agreement_pair_by_pair(weight):
  zv, zm, pv, pm, _ = _gallery()
  sim = affect.similarity(zv, zm, pv, pm, weight)
  for i in range(len(zv)):
    for j in range(len(zm)):
      cos = zv[i] @ zm[j] / np.linalg.norm(zv[i]) / np.linalg.norm(zm[j])
      assert sim[i, j] == pytest.approx((1 - weight) * cos + weight * sum(pv[i] * pm[j]), abs=1e-12)


@pytest.mark.parametrize("weight", [0.0, 0.4, 1.0])
def test_one_stored_gallery_serves_every_weight_by_inner_product(weight):
  zv, zm, pv, pm, _ = _gallery()
  stored = affect.gallery_rows(zm, pm)  # stored once, whatever the weight
  queries = affect.query_rows(zv, pv, weight)
  want = affect.similarity(zv, zm, pv, pm, weight)
  np.testing.assert_allclose(queries @ stored.T, want, atol=1e-6)
  # Every stored row has the same norm, so a cosine index ranks them as the inner product, and gives s_w back.
  np.testing.assert_allclose(np.linalg.norm(stored, axis=1), np.sqrt(2), atol=1e-6)
  cos, ids = search.GalleryIndex(stored, chunk_size=8).search(queries, 5)
  np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :5])
  np.testing.assert_allclose(affect.score(cos, queries), np.take_along_axis(want, ids, axis=1), atol=1e-5)


def test_weight_zero_ranks_exactly_as_cosine_did():
  zv, zm, pv, pm, labels = _gallery(n=20)
  outputs = {"video_embedding": zv, "music_embedding": zm, "video_emotion_probs": pv, "music_emotion_probs": pm}
  assert protocol.ranked_at(outputs, labels, 0.0) == protocol.retrieval_results(zv, zm, labels)


def test_weight_one_ranks_by_emotion_alone_and_finds_the_labels_when_the_head_is_right():
  zv, zm, _, _, labels = _gallery(n=30)
  onehot = np.eye(5)[labels]  # a head that is always right: emotion-only ranking puts every same-emotion item first
  outputs = {"video_embedding": zv, "music_embedding": zm, "video_emotion_probs": onehot, "music_emotion_probs": onehot}
  assert protocol.ranked_at(outputs, labels, 1.0)["video_to_music"]["map"] == pytest.approx(1.0)
  assert protocol.ranked_at(outputs, labels, 0.0)["video_to_music"]["map"] < 0.9


def test_the_chosen_weight_is_the_best_mean_map_and_ties_go_to_the_smaller():
  zv, zm, pv, pm, labels = _gallery(n=30, seed=3)
  weight, by_weight = affect.choose_weight(zv, zm, pv, pm, labels)
  for w in affect.WEIGHTS:
    sim = affect.similarity(zv, zm, pv, pm, w)
    want = 0.5 * (
      metrics.retrieval_metrics(sim, labels, labels)["map"] + metrics.retrieval_metrics(sim.T, labels, labels)["map"]
    )
    assert by_weight[affect.weight_key(w)] == pytest.approx(want)
  assert by_weight[affect.weight_key(weight)] == max(by_weight.values())
  same = np.full_like(pv, 0.2)  # a head that says nothing: every weight's mAP below 1 is cosine's; ties -> 0
  assert affect.choose_weight(zv, zm, same, same, labels)[0] == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, "much"])
def test_a_weight_outside_0_1_is_a_usage_error(bad):
  with pytest.raises(errors.UsageError, match=r"--emotion_weight must be"):
    affect.check_weight(bad)
