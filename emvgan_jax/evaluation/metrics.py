"""Evaluation metrics and their chance levels (docs/models.md, section 4; docs/data.md, chance levels).

Task 1 (pair classification): accuracy, binary F1 (positive = matched), ROC-AUC.
Task 2 (retrieval, one direction per call): label mAP, hit@K, pair-identity Recall@K, median/mean rank of the
true counterpart, and precision-recall curves, each with its exact chance level under a random ranking.

Everything except `cosine_similarity` is host-side numpy in float64, so results do not depend on the
accelerator's matmul precision.

Tie conventions (similarities or scores that are exactly equal):
- Label AP / mAP and the interpolated precision-recall curve use scikit-learn's convention: tied gallery items
  form one cut-off, so every relevant item of a tied block gets the precision at the end of the block. This is
  independent of gallery order and equals `sklearn.metrics.average_precision_score` per query.
- hit@K, Recall@K and the counterpart ranks use one deterministic ranking per query: a stable sort by
  decreasing similarity, so among tied items the lower gallery index ranks first. The counterpart rank is its
  position in that ranking (the "stable" convention, neither optimistic nor pessimistic on average), and
  `recall@K == mean(rank <= K)` holds exactly.
- ROC-AUC gives tied scores their average rank (Mann-Whitney U), i.e. a tie counts one half.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emvgan_jax.ops import l2_normalize

DEFAULT_KS = (1, 3, 5, 10)
# The two retrieval directions, query modality first, as every results dict names them.
DIRECTIONS = ("video_to_music", "music_to_video")
DEFAULT_RECALL_KS = (1, 5, 10)

# Recall levels such as 0.3 are not exactly representable: 3/10 < np.linspace(0, 1, 11)[3]. Without this slack
# the interpolated precision at 0.3 would skip the point that reaches recall 0.3 exactly.
_RECALL_TOL = 1e-9


# ----------------------------------------------------------------------------------------------------------
# Task 1: classification.


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of `x` in increasing order, ties sharing their average rank."""
  order = np.argsort(x, kind="stable")
  sorted_x = x[order]
  # Start index of each run of equal values in sorted order.
  starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
  ends = np.r_[starts[1:], len(x)]
  run_ranks = (starts + 1 + ends) / 2.0  # mean of the 1-based positions starts+1 .. ends
  run_of_position = np.repeat(np.arange(len(starts)), ends - starts)
  ranks = np.empty(len(x), np.float64)
  ranks[order] = run_ranks[run_of_position]
  return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC-AUC as the Mann-Whitney statistic with average ranks for ties.

  Args:
    scores: (N,) scores, higher = more likely positive.
    labels: (N,) 0/1 labels.

  Returns:
    The AUC, or NaN when one class is absent.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1).astype(bool)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = _average_ranks(scores)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def classification_metrics(scores: np.ndarray, labels: np.ndarray, *, threshold: float = 0.5) -> dict:
  """Accuracy, precision, recall, binary F1 and ROC-AUC of matched-pair scores.

  A pair is predicted matched when `score > threshold` (strictly). With softmax probabilities this agrees
  with an argmax over the two logits, which picks class 0 (mismatched) on an exact tie.

  Args:
    scores: (N,) probability (or any score) that the pair is matched.
    labels: (N,) 1 matched / 0 mismatched.
    threshold: decision threshold on `scores`.

  Returns:
    Dict with `accuracy`, `precision`, `recall`, `f1` (positive = matched; a 0/0 ratio counts 0, like
    scikit-learn's `zero_division=0`), `roc_auc` (NaN when one class is absent) and `n`.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if scores.shape != labels.shape:
    raise ValueError(f"scores and labels differ in size: {scores.shape} vs {labels.shape}")
  if not np.isin(labels, (0, 1)).all():
    raise ValueError("labels must be 0/1")
  truth = labels.astype(bool)
  pred = scores > threshold
  tp = int(np.sum(pred & truth))
  fp = int(np.sum(pred & ~truth))
  fn = int(np.sum(~pred & truth))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
  return {
    "accuracy": float(np.mean(pred == truth)) if truth.size else float("nan"),
    "precision": float(precision),
    "recall": float(recall),
    "f1": float(f1),
    "roc_auc": roc_auc(scores, truth),
    "n": int(truth.size),
  }


def classification_chance(labels: np.ndarray) -> dict:
  """Chance levels of `classification_metrics` for a fair-coin predictor.

  A coin flip is right half the time whatever the labels (accuracy 0.5), and any score independent of the
  labels has AUC 0.5. For F1 the value is the F1 of the expected precision and recall: a coin predicts
  "matched" on a random half of the pairs, so expected precision is the positive rate p and expected recall
  0.5, giving `F1 = 2 * p * 0.5 / (p + 0.5)` (0 when p = 0). This is the usual reported chance F1; it is not
  exactly the expectation of F1 over coin flips, which differs by O(1/N).

  Args:
    labels: (N,) 1 matched / 0 mismatched.

  Returns:
    Dict with the same keys as `classification_metrics`.
  """
  labels = np.asarray(labels).reshape(-1)
  p = float(np.mean(labels == 1)) if labels.size else 0.0
  f1 = 2 * p * 0.5 / (p + 0.5) if p > 0 else 0.0
  return {"accuracy": 0.5, "precision": p, "recall": 0.5, "f1": f1, "roc_auc": 0.5, "n": int(labels.size)}


# ----------------------------------------------------------------------------------------------------------
# Task 2: retrieval.


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of every row of `a` with every row of `b` (jittable).

  Args:
    a: (Q, D) embeddings.
    b: (G, D) embeddings.

  Returns:
    (Q, G) matrix `normalise(a) @ normalise(b).T`.
  """
  return l2_normalize(jnp.asarray(a)) @ l2_normalize(jnp.asarray(b)).T  # a zero row has similarity 0, not NaN


def cosine_similarity_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`cosine_similarity` on the host, in float64 (what every retrieval metric ranks by)."""
  a = l2_normalize(np.asarray(a, np.float64))
  b = l2_normalize(np.asarray(b, np.float64))
  if a.shape[0] * b.shape[0] <= _SMALL_PRODUCT:
    # EmoMV galleries (96-250 items): multithreaded BLAS spends ~0.7 ms starting threads here (and far more
    # while XLA's threads hold the cores during training); a plain loop is ~4x faster, still in float64.
    return np.einsum("ik,jk->ij", a, b, optimize=False)
  return a @ b.T


_SMALL_PRODUCT = 512 * 512


def _check_retrieval_inputs(
  similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  similarity = np.asarray(similarity, np.float64)
  query_labels = np.asarray(query_labels).reshape(-1)
  gallery_labels = np.asarray(gallery_labels).reshape(-1)
  if similarity.ndim != 2:
    raise ValueError(f"similarity must be (Q, G), got shape {similarity.shape}")
  q, g = similarity.shape
  if query_labels.shape != (q,) or gallery_labels.shape != (g,):
    raise ValueError(
      f"labels do not fit similarity {similarity.shape}: {query_labels.shape} queries, {gallery_labels.shape} gallery"
    )
  if g == 0:
    raise ValueError("empty gallery")
  if np.isnan(similarity).any():
    raise ValueError("similarity contains NaN")
  return similarity, query_labels, gallery_labels


def _tie_block_ends(sorted_scores: np.ndarray) -> np.ndarray:
  """For each position of rows sorted by decreasing score, the index of the last item tied with it."""
  q, g = sorted_scores.shape
  is_end = np.ones((q, g), bool)
  is_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
  idx = np.where(is_end, np.arange(g)[None, :], g)
  # Nearest end at or after each position: a running minimum from the right.
  return np.minimum.accumulate(idx[:, ::-1], axis=1)[:, ::-1]


def _ranked(similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray):
  """Stable ranking by decreasing similarity, relevance in that order, and tie-block cut-off statistics."""
  order = np.argsort(-similarity, axis=1, kind="stable")
  sorted_scores = np.take_along_axis(similarity, order, axis=1)
  relevant = gallery_labels[None, :] == query_labels[:, None]
  rel_sorted = np.take_along_axis(relevant, order, axis=1)
  cum_rel = np.cumsum(rel_sorted, axis=1)
  n_rel = cum_rel[:, -1]
  ends = _tie_block_ends(sorted_scores)
  # Counts at the end of each item's tie block: order inside a block then cannot change AP or the PR curve.
  rel_at_cut = np.take_along_axis(cum_rel, ends, axis=1)
  n_at_cut = ends + 1
  return order, rel_sorted, cum_rel, n_rel, rel_at_cut, n_at_cut, ends


def _average_precision(
  rel_sorted: np.ndarray, n_rel: np.ndarray, rel_at_cut: np.ndarray, n_at_cut: np.ndarray
) -> np.ndarray:
  """Per-query AP (sklearn tie convention); NaN for queries without any relevant item."""
  precision_at_cut = rel_at_cut / n_at_cut
  summed = np.sum(np.where(rel_sorted, precision_at_cut, 0.0), axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(n_rel > 0, summed / n_rel, np.nan)


def average_precision_per_query(
  similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray
) -> np.ndarray:
  """Label-relevance average precision of every query over the whole gallery.

  Args:
    similarity: (Q, G) similarities, higher = better.
    query_labels: (Q,) class ids of the queries.
    gallery_labels: (G,) class ids of the gallery.

  Returns:
    (Q,) AP per query (scikit-learn tie convention), NaN where the gallery holds no item of the query's class.
  """
  similarity, query_labels, gallery_labels = _check_retrieval_inputs(similarity, query_labels, gallery_labels)
  _, rel_sorted, _, n_rel, rel_at_cut, n_at_cut, _ = _ranked(similarity, query_labels, gallery_labels)
  return _average_precision(rel_sorted, n_rel, rel_at_cut, n_at_cut)


def _check_counterparts(num_queries: int, num_items: int) -> None:
  if num_queries > num_items:
    raise ValueError(
      f"pair-identity metrics need Q <= G (query i's counterpart is gallery item i), got {num_queries} > {num_items}"
    )


def counterpart_ranks(similarity: np.ndarray, offset: int = 0) -> np.ndarray:
  """1-based rank of gallery item i in query i's ranking (stable: ties go to the lower gallery index).

  `rank_i = 1 + #{j : s_ij > s_ii} + #{j < i : s_ij == s_ii}`.

  Args:
    similarity: (Q, G) similarities with Q <= G; query i's counterpart is gallery item i.
    offset: the rows are queries `offset`, `offset + 1`, ... of a larger query set (a block of it).

  Returns:
    (Q,) int ranks in [1, G].
  """
  similarity = np.asarray(similarity, np.float64)
  q, g = similarity.shape
  _check_counterparts(offset + q, g)
  index = offset + np.arange(q)
  own = similarity[np.arange(q), index][:, None]
  before = np.arange(g)[None, :] < index[:, None]
  ahead = (similarity > own) | ((similarity == own) & before)
  return 1 + ahead.sum(axis=1)


def retrieval_metrics(
  similarity: np.ndarray,
  query_labels: np.ndarray,
  gallery_labels: np.ndarray,
  *,
  ks: Sequence[int] = DEFAULT_KS,
  recall_ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict:
  """Retrieval metrics for one direction (e.g. video queries ranking the music gallery).

  Args:
    similarity: (Q, G) similarities, higher = better; query i's true counterpart is gallery item i.
    query_labels: (Q,) emotion ids of the queries.
    gallery_labels: (G,) emotion ids of the gallery items (classes may be absent).
    ks: cut-offs for label hit@K; K larger than G is clipped to G.
    recall_ks: cut-offs for pair-identity Recall@K.

  Returns:
    Dict with
      `map`: mean AP over the queries whose class occurs in the gallery (NaN if none does),
      `hit@K`: share of all queries with at least one same-class item in the top K (a query whose class is
        absent from the gallery counts as a miss),
      `recall@K`: share of queries whose counterpart is in the top K,
      `median_rank`, `mean_rank`: of the counterpart (1-based, stable ties),
      `num_queries`, `num_queries_with_relevant`.
  """
  similarity, query_labels, gallery_labels = _check_retrieval_inputs(similarity, query_labels, gallery_labels)
  q, g = similarity.shape
  _check_counterparts(q, g)  # before any block is ranked
  # Per query, in blocks of queries: memory is O(block x G), and every query's numbers are what one pass gives.
  ap, has_rel, ranks, hits = [], [], [], {k: [] for k in ks}
  for start in range(0, q, QUERY_BLOCK):
    block = similarity[start : start + QUERY_BLOCK]
    _, rel_sorted, cum_rel, n_rel, rel_at_cut, n_at_cut, _ = _ranked(
      block, query_labels[start : start + QUERY_BLOCK], gallery_labels
    )
    ap.append(_average_precision(rel_sorted, n_rel, rel_at_cut, n_at_cut))
    has_rel.append(n_rel > 0)
    for k in ks:
      hits[k].append(cum_rel[:, min(int(k), g) - 1] > 0)
    ranks.append(counterpart_ranks(block, offset=start))
  ap, has_rel, ranks = np.concatenate(ap), np.concatenate(has_rel), np.concatenate(ranks)
  out = {"map": float(np.mean(ap[has_rel])) if has_rel.any() else float("nan")}
  for k in ks:
    out[f"hit@{k}"] = float(np.mean(np.concatenate(hits[k])))
  for k in recall_ks:
    out[f"recall@{k}"] = float(np.mean(ranks <= k))
  out["median_rank"] = float(np.median(ranks))
  out["mean_rank"] = float(np.mean(ranks))
  out["num_queries"] = int(q)
  out["num_queries_with_relevant"] = int(has_rel.sum())
  return out


QUERY_BLOCK = 512  # queries ranked at a time by `retrieval_metrics`


def expected_average_precision(num_relevant: int, num_items: int) -> float:
  """E[AP] of a uniformly random ranking of `num_items` items, `num_relevant` of them relevant.

  With rel_k the indicator that rank k is relevant and c_k the relevant count in the top k,
  `AP = (1/R) sum_k rel_k c_k / k` and `E[rel_k c_k] = (R/N) (1 + (k-1)(R-1)/(N-1))`, so

    E[AP] = (1/N) * (H_N + (R-1)/(N-1) * (N - H_N)),   H_N = sum_{k=1}^{N} 1/k.

  Args:
    num_relevant: R >= 1.
    num_items: N >= R.

  Returns:
    The expectation (NaN when R = 0, where AP is undefined).
  """
  r, n = int(num_relevant), int(num_items)
  if r <= 0:
    return float("nan")
  if r > n:
    raise ValueError(f"{r} relevant among {n} items")
  if n == 1:
    return 1.0
  h_n = math.fsum(1.0 / k for k in range(1, n + 1))
  return (h_n + (r - 1) / (n - 1) * (n - h_n)) / n


def expected_hit_at_k(num_relevant: int, num_items: int, k: int) -> float:
  """P(at least one relevant item in the top k) under a random ranking: `1 - C(N-R, k) / C(N, k)`."""
  r, n = int(num_relevant), int(num_items)
  k = min(int(k), n)
  # C(N-R, k) / C(N, k) = prod_{i<k} (N-R-i) / (N-i): no huge binomials, and exactly 0 once N-R < k.
  miss = 1.0
  for i in range(k):
    miss *= max(n - r - i, 0) / (n - i)
  return 1.0 - miss


def retrieval_chance(
  query_labels: np.ndarray,
  gallery_labels: np.ndarray,
  *,
  ks: Sequence[int] = DEFAULT_KS,
  recall_ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict:
  """Exact expectations of `retrieval_metrics` under a uniformly random ranking of the gallery.

  Per query with R same-class items among N: E[AP] from `expected_average_precision`, hit@K from
  `expected_hit_at_k`, and Recall@K = min(K, N) / N. The counterpart's rank is uniform on 1..N, so mean and
  median rank are both (N + 1) / 2 (the median of that distribution; the sample median over Q queries
  scatters around it). Averages follow `retrieval_metrics`: mAP over queries with R >= 1, the rest over all.

  Args:
    query_labels: (Q,) emotion ids of the queries.
    gallery_labels: (G,) emotion ids of the gallery.
    ks: cut-offs for hit@K.
    recall_ks: cut-offs for Recall@K.

  Returns:
    Dict with the keys of `retrieval_metrics`.
  """
  query_labels = np.asarray(query_labels).reshape(-1)
  gallery_labels = np.asarray(gallery_labels).reshape(-1)
  n = gallery_labels.size
  if n == 0:
    raise ValueError("empty gallery")
  classes, counts = np.unique(gallery_labels, return_counts=True)
  count_of = dict(zip(classes.tolist(), counts.tolist()))
  r = np.array([count_of.get(label, 0) for label in query_labels.tolist()], np.int64)
  has_rel = r > 0
  ap = [expected_average_precision(x, n) for x in r[has_rel]]
  out = {"map": float(np.mean(ap)) if ap else float("nan")}
  for k in ks:
    out[f"hit@{k}"] = float(np.mean([expected_hit_at_k(x, n, k) for x in r])) if r.size else float("nan")
  for k in recall_ks:
    out[f"recall@{k}"] = min(int(k), n) / n
  out["median_rank"] = (n + 1) / 2.0
  out["mean_rank"] = (n + 1) / 2.0
  out["num_queries"] = int(query_labels.size)
  out["num_queries_with_relevant"] = int(has_rel.sum())
  return out


def precision_recall_curve(
  similarity: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, *, num_points: int | None = 11
) -> tuple[np.ndarray, np.ndarray]:
  """Label-relevance precision-recall curve averaged over queries, for plots.

  With `num_points = n` (default 11): the interpolated curve at recall levels `linspace(0, 1, n)`; per query,
  `p_interp(r) = max{precision at a cut-off whose recall >= r}` (cut-offs at tie-block ends, as in
  scikit-learn), then averaged over the queries with at least one relevant item. With `num_points=None`: the
  uninterpolated rank-wise curve, mean recall@k and mean precision@k for k = 1..G under the stable ranking.

  Args:
    similarity: (Q, G) similarities.
    query_labels: (Q,) class ids of the queries.
    gallery_labels: (G,) class ids of the gallery.
    num_points: number of recall levels (>= 2), or None for every rank.

  Returns:
    `(recall, precision)`, two 1-D float64 arrays of equal length (NaN-filled if no query has a relevant item).
  """
  similarity, query_labels, gallery_labels = _check_retrieval_inputs(similarity, query_labels, gallery_labels)
  g = similarity.shape[1]
  _, rel_sorted, cum_rel, n_rel, rel_at_cut, n_at_cut, ends = _ranked(similarity, query_labels, gallery_labels)
  keep = n_rel > 0
  if num_points is None:
    ranks = np.arange(1, g + 1)
    if not keep.any():
      return ranks / g, np.full(g, np.nan)
    recall = np.mean(cum_rel[keep] / n_rel[keep, None], axis=0)
    precision = np.mean(cum_rel[keep] / ranks[None, :], axis=0)
    return recall, precision
  if num_points < 2:
    raise ValueError("num_points must be >= 2 or None")
  levels = np.linspace(0.0, 1.0, num_points)
  if not keep.any():
    return levels, np.full(num_points, np.nan)
  recall_at_cut = rel_at_cut[keep] / n_rel[keep, None]
  precision_at_cut = rel_at_cut[keep] / n_at_cut[keep]
  # Every position of a tie block carries the block-end values, so taking the max over all positions equals
  # the max over the distinct cut-offs.
  reaches = recall_at_cut[:, :, None] >= levels[None, None, :] - _RECALL_TOL
  interp = np.max(np.where(reaches, precision_at_cut[:, :, None], 0.0), axis=1)
  return levels, interp.mean(axis=0)


def summarize_retrieval(
  video_emb: np.ndarray,
  music_emb: np.ndarray,
  labels: np.ndarray,
  *,
  music_labels: np.ndarray | None = None,
  ks: Sequence[int] = DEFAULT_KS,
  recall_ks: Sequence[int] = DEFAULT_RECALL_KS,
) -> dict:
  """Both retrieval directions of a gallery whose row i is one segment's (video, music) pair.

  Cosine similarities are computed on the host in float64; music->video uses the transpose of the
  video->music matrix, so both directions rank exactly the same numbers.

  Args:
    video_emb: (N, D) video embeddings of the gallery.
    music_emb: (N, D) music embeddings of the gallery.
    labels: (N,) emotion ids (of the videos, and of the music too unless `music_labels` is given).
    music_labels: optional (N,) emotion ids of the music clips when they differ from `labels`.
    ks: cut-offs for hit@K.
    recall_ks: cut-offs for Recall@K.

  Returns:
    `{'video_to_music': retrieval_metrics(...), 'music_to_video': retrieval_metrics(...)}`.
  """
  video_labels = np.asarray(labels).reshape(-1)
  music_labels = video_labels if music_labels is None else np.asarray(music_labels).reshape(-1)
  sim = cosine_similarity_np(video_emb, music_emb)
  return {
    "video_to_music": retrieval_metrics(sim, video_labels, music_labels, ks=ks, recall_ks=recall_ks),
    "music_to_video": retrieval_metrics(sim.T, music_labels, video_labels, ks=ks, recall_ks=recall_ks),
  }
