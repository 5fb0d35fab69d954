"""Tests of evaluation/metrics.py against scikit-learn, slow explicit loops, Monte-Carlo and hand-worked examples."""

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from emvgan_jax.evaluation import metrics

# ------------------------------------------------------------------------------------------------------------
# Task 1: classification


def test_classification_hand_example():
  # Predictions (> 0.5): [1, 0, 1, 0] vs labels [1, 1, 0, 0]: tp 1, fp 1, fn 1, tn 1.
  # accuracy 2/4; precision 1/2; recall 1/2; F1 = 2 tp / (2 tp + fp + fn) = 2/4.
  # AUC: (pos, neg) pairs (.9,.6) win, (.9,.1) win, (.4,.6) loss, (.4,.1) win -> 3/4.
  got = metrics.classification_metrics([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0])
  assert got["accuracy"] == 0.5
  assert got["precision"] == 0.5
  assert got["recall"] == 0.5
  assert got["f1"] == 0.5
  assert got["roc_auc"] == 0.75
  assert got["n"] == 4


def test_classification_ties_and_degenerate_cases():
  # A tied (pos, neg) pair counts 1/2; a score equal to the threshold predicts mismatched (strict >).
  got = metrics.classification_metrics([0.5, 0.5], [1, 0])
  assert got["roc_auc"] == 0.5
  assert got["accuracy"] == 0.5
  assert got["f1"] == 0.0  # no predicted positive: precision 0/0 -> 0, recall 0 -> F1 0
  # Only negatives, none predicted positive: F1 0/0 -> 0 (zero_division=0); AUC undefined.
  got = metrics.classification_metrics([0.1, 0.2], [0, 0])
  assert got["f1"] == 0.0 and got["accuracy"] == 1.0
  assert math.isnan(got["roc_auc"])
  assert math.isnan(metrics.classification_metrics([0.7, 0.9], [1, 1])["roc_auc"])
  with pytest.raises(ValueError):
    metrics.classification_metrics([0.1, 0.2], [0, 2])


@pytest.mark.parametrize("seed", range(6))
def test_classification_against_sklearn(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(5, 200))
  labels = rng.integers(0, 2, n)
  scores = rng.random(n)
  if seed % 2:
    scores = np.round(scores * 4) / 4  # heavy ties, including scores exactly at the threshold 0.5
  if seed == 5:
    scores = np.full(n, 0.25)  # no predicted positive at all
  threshold = 0.5 if seed < 4 else 0.3
  got = metrics.classification_metrics(scores, labels, threshold=threshold)
  pred = (scores > threshold).astype(int)
  assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
  assert got["f1"] == pytest.approx(skm.f1_score(labels, pred, zero_division=0))
  assert got["precision"] == pytest.approx(skm.precision_score(labels, pred, zero_division=0))
  assert got["recall"] == pytest.approx(skm.recall_score(labels, pred, zero_division=0))
  assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))


def test_classification_chance():
  # p = 1/2: F1 = 2 * 0.5 * 0.5 / (0.5 + 0.5) = 0.5. p = 1/4: 2 * 0.25 * 0.5 / 0.75 = 1/3.
  assert metrics.classification_chance([1, 0, 1, 0])["f1"] == pytest.approx(0.5)
  chance = metrics.classification_chance([1, 0, 0, 0])
  assert chance["f1"] == pytest.approx(1 / 3)
  assert chance["accuracy"] == 0.5 and chance["roc_auc"] == 0.5
  assert metrics.classification_chance([0, 0])["f1"] == 0.0
  # Monte-Carlo: the coin's mean precision and recall are p and 1/2, and its mean accuracy 1/2.
  rng = np.random.default_rng(0)
  labels = (rng.random(400) < 0.3).astype(int)
  p = labels.mean()
  coins = rng.random((2000, labels.size)) < 0.5
  tp = (coins & (labels == 1)).sum(1)
  assert np.mean(tp / coins.sum(1)) == pytest.approx(p, abs=0.005)
  assert np.mean(tp / labels.sum()) == pytest.approx(0.5, abs=0.005)
  assert np.mean(coins == (labels == 1)) == pytest.approx(0.5, abs=0.005)
  assert metrics.classification_chance(labels)["f1"] == pytest.approx(2 * p * 0.5 / (p + 0.5))


# ------------------------------------------------------------------------------------------------------------
# Task 2: retrieval


def _random_case(rng, q=40, quantise=True, absent=True):
  """Random similarity (Q, Q) with optional heavy ties, query classes 0..4, gallery classes maybe a subset."""
  sim = rng.normal(size=(q, q))
  if quantise:
    sim = np.round(sim * 2) / 2  # about 10 distinct values per row: many ties
  query_labels = rng.integers(0, 5, q)
  gallery_labels = rng.integers(0, 3 if absent else 5, q)  # classes 3 and 4 absent from the gallery
  return sim, query_labels, gallery_labels


def _stable_order(row):
  """Gallery indices by decreasing similarity, lower index first among ties (explicit, slow)."""
  return sorted(range(len(row)), key=lambda j: (-row[j], j))


def test_retrieval_hand_example():
  # Gallery labels [0, 1, 0, 1]; two queries.
  # Query 0 (label 0), similarities [0.1, 0.9, 0.8, 0.2]: order 1, 2, 3, 0; relevant (label 0) = [0, 1, 0, 1].
  #   AP = (1/2)(1/2 + 2/4) = 0.5; hit@1 no, hit@3 yes; counterpart 0 at rank 4.
  # Query 1 (label 1), similarities [0.3, 0.5, 0.5, 0.1]: order 1, 2, 0, 3 (1 wins the tie with 2).
  #   Relevant items 1 and 3. Tie block {1, 2} ends at cut-off 2 with 1 relevant: precision 1/2 for item 1
  #   (not 1/1: the sklearn convention); item 3 at cut-off 4 with 2 relevant: 2/4. AP = (1/2 + 1/2) / 2 = 0.5.
  #   Counterpart 1 is at rank 1 (stable tie-break); hit@1 yes (item 1 is relevant).
  sim = np.array([[0.1, 0.9, 0.8, 0.2], [0.3, 0.5, 0.5, 0.1]])
  got = metrics.retrieval_metrics(sim, [0, 1], [0, 1, 0, 1], ks=(1, 3), recall_ks=(1, 3))
  assert got["map"] == pytest.approx(0.5)
  assert got["hit@1"] == 0.5 and got["hit@3"] == 1.0
  assert got["recall@1"] == 0.5 and got["recall@3"] == 0.5
  assert got["median_rank"] == 2.5 and got["mean_rank"] == 2.5
  # An all-tied row: ranks follow the gallery index, so query i's counterpart is at rank i + 1.
  np.testing.assert_array_equal(metrics.counterpart_ranks(np.zeros((3, 5))), [1, 2, 3])


@pytest.mark.parametrize("quantise", [False, True])
@pytest.mark.parametrize("absent", [False, True])
def test_average_precision_against_sklearn(quantise, absent):
  rng = np.random.default_rng(10 + 2 * quantise + absent)
  sim, ql, gl = _random_case(rng, q=30, quantise=quantise, absent=absent)
  ap = metrics.average_precision_per_query(sim, ql, gl)
  relevance = gl[None, :] == ql[:, None]
  expected = []
  for i in range(len(ql)):
    if not relevance[i].any():
      assert math.isnan(ap[i])
      continue
    want = skm.average_precision_score(relevance[i], sim[i])
    # The same from sklearn's PR curve: AP = sum_n (R_n - R_{n-1}) P_n.
    precision, recall, _ = skm.precision_recall_curve(relevance[i], sim[i])
    assert -np.sum(np.diff(recall) * precision[:-1]) == pytest.approx(want)
    assert ap[i] == pytest.approx(want)
    expected.append(want)
  got = metrics.retrieval_metrics(sim, ql, gl)
  assert got["map"] == pytest.approx(np.mean(expected))
  assert got["num_queries_with_relevant"] == len(expected)
  # Label-ranking AP treats every tied item pessimistically per relevant item, which is the same cut-off rule.
  has = relevance.any(1)
  lrap = skm.label_ranking_average_precision_score(relevance[has], sim[has])
  assert got["map"] == pytest.approx(lrap)


@pytest.mark.parametrize("quantise", [False, True])
def test_hits_recalls_ranks_against_loop(quantise):
  rng = np.random.default_rng(20 + quantise)
  sim, ql, gl = _random_case(rng, q=30, quantise=quantise, absent=True)
  ks, recall_ks = (1, 3, 5, 10, 50), (1, 5, 10, 50)
  got = metrics.retrieval_metrics(sim, ql, gl, ks=ks, recall_ks=recall_ks)
  ranks, hits = [], {k: 0 for k in ks}
  for i in range(len(ql)):
    order = _stable_order(list(sim[i]))
    ranks.append(order.index(i) + 1)
    for k in ks:
      hits[k] += any(gl[j] == ql[i] for j in order[:k])
  for k in ks:
    assert got[f"hit@{k}"] == pytest.approx(hits[k] / len(ql))  # K = 50 > G = 30 is clipped to the gallery
  for k in recall_ks:
    assert got[f"recall@{k}"] == pytest.approx(np.mean(np.array(ranks) <= k))
  assert got["median_rank"] == np.median(ranks)
  assert got["mean_rank"] == pytest.approx(np.mean(ranks))
  np.testing.assert_array_equal(metrics.counterpart_ranks(sim), ranks)


def test_retrieval_rejects_bad_input():
  with pytest.raises(ValueError):
    metrics.retrieval_metrics(np.zeros((3, 2)), [0, 0, 0], [0, 0])  # Q > G: no counterpart for query 2
  with pytest.raises(ValueError):
    metrics.retrieval_metrics(np.full((2, 2), np.nan), [0, 0], [0, 0])
  with pytest.raises(ValueError):
    metrics.retrieval_metrics(np.zeros((2, 2)), [0, 0], [0, 0, 1])


@pytest.mark.parametrize("quantise", [False, True])
def test_interpolated_pr_curve_against_sklearn(quantise):
  rng = np.random.default_rng(30 + quantise)
  sim, ql, gl = _random_case(rng, q=25, quantise=quantise, absent=True)
  recall, precision = metrics.precision_recall_curve(sim, ql, gl)
  levels = np.linspace(0, 1, 11)
  np.testing.assert_allclose(recall, levels)
  relevance = gl[None, :] == ql[:, None]
  curves = []
  for i in np.flatnonzero(relevance.any(1)):
    p, r, _ = skm.precision_recall_curve(relevance[i], sim[i])
    p, r = p[:-1], r[:-1]  # drop sklearn's appended (recall 0, precision 1) end point
    # Exact fractions: recall levels such as 3/10 must count as reached by a recall of exactly 3/10.
    curves.append([max(p[r >= lev - 1e-9]) for lev in levels])
  np.testing.assert_allclose(precision, np.mean(curves, axis=0), rtol=1e-12)
  # Interpolated precision never increases with recall, and at recall 1 it is the precision at full recall.
  assert np.all(np.diff(precision) <= 1e-12)


def test_rankwise_pr_curve_against_loop():
  rng = np.random.default_rng(40)
  sim, ql, gl = _random_case(rng, q=20, quantise=True, absent=True)
  recall, precision = metrics.precision_recall_curve(sim, ql, gl, num_points=None)
  rs, ps = [], []
  for i in range(len(ql)):
    n_rel = int(np.sum(gl == ql[i]))
    if n_rel == 0:
      continue
    order = _stable_order(list(sim[i]))
    hits = np.cumsum([gl[j] == ql[i] for j in order])
    rs.append(hits / n_rel)
    ps.append(hits / np.arange(1, len(order) + 1))
  np.testing.assert_allclose(recall, np.mean(rs, axis=0))
  np.testing.assert_allclose(precision, np.mean(ps, axis=0))
  assert recall[-1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------------------
# Chance levels


def test_expected_average_precision_small_cases_by_enumeration():
  # N = 3, R = 1: the relevant item is at rank 1, 2, 3 with AP 1, 1/2, 1/3 -> E = 11/18.
  # Formula: (1/3)(H_3 + 0) = (1/3)(11/6) = 11/18.
  assert metrics.expected_average_precision(1, 3) == pytest.approx(11 / 18)
  # N = 3, R = 2: rankings (as relevance patterns) 110 -> 1; 101 -> (1 + 2/3)/2 = 5/6; 011 -> (1/2 + 2/3)/2 = 7/12.
  # Mean = (1 + 5/6 + 7/12) / 3 = 29/36. Formula: (1/3)(11/6 + (1/2)(3 - 11/6)) = (1/3)(11/6 + 7/12) = 29/36.
  assert metrics.expected_average_precision(2, 3) == pytest.approx(29 / 36)
  assert metrics.expected_average_precision(4, 4) == 1.0
  assert metrics.expected_average_precision(1, 1) == 1.0
  assert math.isnan(metrics.expected_average_precision(0, 5))


@pytest.mark.parametrize("r,n", [(1, 10), (3, 10), (7, 96), (33, 96), (50, 250)])
def test_expected_average_precision_monte_carlo(r, n):
  rng = np.random.default_rng(r * 1000 + n)
  trials = 4000
  # Random rankings: the relevant items are the first r gallery indices, ranks are a random permutation.
  relevance = np.argsort(rng.random((trials, n)), axis=1) < r
  hits = np.cumsum(relevance, axis=1)
  ap = np.sum(relevance * hits / np.arange(1, n + 1), axis=1) / r
  expected = metrics.expected_average_precision(r, n)
  standard_error = ap.std() / math.sqrt(trials)
  assert abs(ap.mean() - expected) < 4 * standard_error + 1e-9


def test_expected_hit_at_k_exact():
  # 1 - C(N-R, k) / C(N, k) with exact integers.
  for r, n, k in [(7, 96, 1), (7, 96, 3), (33, 96, 5), (1, 10, 10), (5, 8, 4), (2, 5, 7)]:
    kk = min(k, n)
    want = 1 - Fraction(math.comb(n - r, kk), math.comb(n, kk))
    assert metrics.expected_hit_at_k(r, n, k) == pytest.approx(float(want), rel=1e-12)
  assert metrics.expected_hit_at_k(0, 10, 3) == 0.0


def test_retrieval_chance_matches_monte_carlo():
  rng = np.random.default_rng(50)
  n = 40
  gallery_labels = rng.integers(0, 4, n)
  query_labels = rng.integers(0, 5, n)  # class 4 never in the gallery
  chance = metrics.retrieval_chance(query_labels, gallery_labels)
  trials = 300
  runs = [metrics.retrieval_metrics(rng.random((n, n)), query_labels, gallery_labels) for _ in range(trials)]
  for key in chance:
    if key.startswith("num_"):
      assert chance[key] == runs[0][key]
      continue
    values = np.array([run[key] for run in runs])
    # Sample medians are discrete (half-integers): allow a rank of slack on top of the sampling error.
    slack = 1.0 if key == "median_rank" else 0.0
    assert abs(values.mean() - chance[key]) < 4 * values.std() / math.sqrt(trials) + slack + 1e-9, key


def test_retrieval_chance_emomv_c_table():
  # EmoMV-C gallery: class counts 33/7/11/22/23, N = 96, every item is a query of its own class.
  counts = [33, 7, 11, 22, 23]
  labels = np.repeat(np.arange(5), counts)
  chance = metrics.retrieval_chance(labels, labels)
  n = 96
  # hit@1 = sum_c (n_c / N) * (n_c / N) = 2272 / 9216 exactly.
  assert chance["hit@1"] == pytest.approx(2272 / 9216, rel=1e-12)
  # hit@k = sum_c (n_c / N) (1 - C(N - n_c, k) / C(N, k)), with exact integers.
  for k in (3, 5, 10):
    want = sum(Fraction(c, n) * (1 - Fraction(math.comb(n - c, k), math.comb(n, k))) for c in counts)
    assert chance[f"hit@{k}"] == pytest.approx(float(want), rel=1e-12)
  assert chance["recall@1"] == pytest.approx(1 / 96)
  assert chance["recall@10"] == pytest.approx(10 / 96)
  assert chance["mean_rank"] == chance["median_rank"] == 48.5
  # The exact values are 0.2794 / 0.2465 / 0.5590 / 0.7302. The table in the EmoMV notes
  # (shared/docs/emomv-data.md) lists 0.280 / 0.246 / 0.562 / 0.734: within 0.005 of the exact values (it looks
  # like a Monte-Carlo estimate), but not equal to them after rounding to 3 decimals.
  assert round(chance["map"], 3) == 0.279
  assert round(chance["hit@1"], 3) == 0.247
  assert round(chance["hit@3"], 3) == 0.559
  assert round(chance["hit@5"], 3) == 0.730
  table = {"map": 0.280, "hit@1": 0.246, "hit@3": 0.562, "hit@5": 0.734}
  for key, value in table.items():
    assert abs(chance[key] - value) < 0.005, key


def test_retrieval_chance_absent_classes():
  # Query class 9 is absent: it is left out of mAP and counts as a miss in hit@K.
  chance = metrics.retrieval_chance([0, 9], [0, 1, 1, 1])
  assert chance["map"] == pytest.approx(metrics.expected_average_precision(1, 4))
  assert chance["hit@1"] == pytest.approx(0.5 * 0.25)
  assert chance["num_queries_with_relevant"] == 1


# ------------------------------------------------------------------------------------------------------------
# Similarity and the two-direction summary


def test_cosine_similarity_jittable():
  rng = np.random.default_rng(60)
  a = rng.normal(size=(5, 3)).astype(np.float32)
  b = rng.normal(size=(4, 3)).astype(np.float32)
  b[2] = 0  # a zero row: similarity 0, not NaN
  got = np.asarray(jax.jit(metrics.cosine_similarity)(jnp.asarray(a), jnp.asarray(b)))
  an = a / np.linalg.norm(a, axis=1, keepdims=True)
  bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
  np.testing.assert_allclose(got, an @ bn.T, atol=1e-5)
  assert np.all(got[:, 2] == 0)


def test_summarize_retrieval():
  rng = np.random.default_rng(70)
  n = 12
  labels = rng.integers(0, 3, n)
  video = rng.normal(size=(n, 8))
  music = video * rng.uniform(0.5, 2.0, size=(n, 1))  # same directions: every counterpart at cosine 1
  got = metrics.summarize_retrieval(video, music, labels)
  for direction in ("video_to_music", "music_to_video"):
    assert got[direction]["recall@1"] == 1.0
    assert got[direction]["mean_rank"] == 1.0
    assert got[direction]["hit@1"] == 1.0
  # On unrelated embeddings both directions equal retrieval_metrics on the matrix and its transpose.
  music = rng.normal(size=(n, 8))
  got = metrics.summarize_retrieval(video, music, labels)
  sim = np.asarray(metrics.cosine_similarity(jnp.asarray(video), jnp.asarray(music)))
  v2m = metrics.retrieval_metrics(sim, labels, labels)
  m2v = metrics.retrieval_metrics(sim.T, labels, labels)
  for key in v2m:
    assert got["video_to_music"][key] == pytest.approx(v2m[key]), key
    assert got["music_to_video"][key] == pytest.approx(m2v[key]), key


def test_retrieval_metrics_in_query_blocks_equal_one_pass(monkeypatch):
  rng = np.random.default_rng(4)
  sim = np.round(rng.normal(size=(37, 41)), 1)  # ties, and a gallery larger than the queries
  q_labels, g_labels = rng.integers(0, 5, 37), rng.integers(0, 5, 41)
  one_pass = metrics.retrieval_metrics(sim, q_labels, g_labels)
  monkeypatch.setattr(metrics, "QUERY_BLOCK", 5)
  assert metrics.retrieval_metrics(sim, q_labels, g_labels) == one_pass


def _threshold_by_every_candidate(scores, labels):
  """The threshold search compared score by score with every candidate (O(n x candidates))."""
  order = np.unique(scores)
  candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
  acc = [np.mean((scores >= t) == (labels == 1)) for t in candidates]
  return float(candidates[int(np.argmax(acc))])


@pytest.mark.parametrize("seed", range(6))
def test_threshold_equals_trying_every_candidate(seed):
  from emvgan_jax.evaluation import protocol  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  n = int(rng.integers(1, 400))
  labels = (rng.random(n) < [0.5, 0.2, 1.0, 0.0, 0.5, 0.7][seed]).astype(np.int32)
  scores = rng.normal(size=n) + labels
  if seed % 2:  # ties, in float32 (midpoints rounded like the scores)
    scores = np.round(scores, 1).astype(np.float32)
  assert protocol.choose_threshold(scores, labels) == _threshold_by_every_candidate(scores, labels)
