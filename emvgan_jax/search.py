"""Exact cosine top-k search over galleries of any size, and batched embedding of raw feature rows.

`top_k_cosine` never builds the full (queries x gallery) similarity matrix: it walks the gallery in chunks of a
fixed size, takes each chunk's top k with a jitted matrix product and `jax.lax.top_k`, and merges that into a
running top k. Memory is O(queries x chunk); a million-item gallery costs a million-wide matrix at no point.
Every chunk has the same shape (the last one is padded and masked), so the search compiles once.

Order among equal scores is by gallery index (lowest first): `lax.top_k` breaks ties towards the lower index, and
the running top k (earlier, lower indices) is placed before each new chunk when merging. That is the order of a
stable sort by decreasing similarity, which is what `metrics` uses for ranks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from emvgan_jax.ops import l2_normalize, non_finite_rows

DEFAULT_CHUNK_SIZE = 65536
DEFAULT_QUERY_BLOCK = 1024


@functools.partial(jax.jit, static_argnames=("k",))
def _merge_chunk(
  queries: jax.Array,
  chunk: jax.Array,
  num_valid: jax.Array,
  offset: jax.Array,
  best_scores: jax.Array,
  best_indices: jax.Array,
  *,
  k: int,
) -> tuple[jax.Array, jax.Array]:
  """The running top k of normalised `queries` updated with one gallery chunk (its first `num_valid` rows)."""
  # HIGHEST: on accelerators the default matmul precision is bfloat16-like, which would reorder close items
  # relative to an exact (numpy) ranking.
  sims = jnp.matmul(queries, l2_normalize(chunk).T, precision=jax.lax.Precision.HIGHEST)
  valid = jnp.arange(chunk.shape[0]) < num_valid
  sims = jnp.where(valid[None, :], sims, -jnp.inf)
  chunk_scores, chunk_indices = jax.lax.top_k(sims, min(k, chunk.shape[0]))
  scores = jnp.concatenate([best_scores, chunk_scores], axis=1)
  indices = jnp.concatenate([best_indices, chunk_indices.astype(jnp.int32) + offset], axis=1)
  top_scores, pos = jax.lax.top_k(scores, k)
  return top_scores, jnp.take_along_axis(indices, pos, axis=1)


def top_k_cosine(
  queries: Any, gallery: Any, k: int, *, chunk_size: int = DEFAULT_CHUNK_SIZE, query_block: int = DEFAULT_QUERY_BLOCK
) -> tuple[np.ndarray, np.ndarray]:
  """The `k` gallery rows most cosine-similar to each query, exactly, in chunks over the gallery.

  Args:
    queries: (Q, D) or (D,) query vectors (any scale; they are L2-normalised here).
    gallery: (G, D) gallery vectors, host numpy (may be large) or a jax array.
    k: how many to return per query; clipped to G.
    chunk_size: gallery rows per step; peak memory is about Q x chunk_size similarities.
    query_block: queries per step (bounds memory when there are many queries too).

  Returns:
    `(scores, indices)`: (Q, k') float32 cosines in decreasing order and (Q, k') int64 gallery row indices,
    with k' = min(k, G); ties are ordered by gallery index. A 1-D query gives 1-D results.

  Raises:
    ValueError: on empty inputs, mismatched widths, a non-positive k or chunk size, or a query or gallery row
      with a NaN or infinite value (the first such row is named: its cosines would be meaningless).
  """
  queries = np.asarray(queries, np.float32)
  single = queries.ndim == 1
  queries = queries[None, :] if single else queries
  if queries.ndim != 2 or getattr(gallery, "ndim", 0) != 2:
    raise ValueError(
      f"queries must be (Q, D) and gallery (G, D), got {queries.shape} and {getattr(gallery, 'shape', None)}"
    )
  num_items, width = gallery.shape
  if queries.shape[1] != width:
    raise ValueError(f"queries have width {queries.shape[1]}, the gallery {width}")
  if num_items == 0 or queries.shape[0] == 0:
    raise ValueError("empty gallery or no queries")
  if k < 1 or chunk_size < 1 or query_block < 1:
    raise ValueError(f"k, chunk_size and query_block must be positive, got {k}, {chunk_size}, {query_block}")
  _check_finite(queries, "query", 0)
  k = min(int(k), num_items)
  chunk_size = min(int(chunk_size), num_items)  # no padding beyond a gallery smaller than one chunk
  all_scores, all_indices = [], []
  for q_start in range(0, queries.shape[0], query_block):
    q = l2_normalize(jnp.asarray(queries[q_start : q_start + query_block]))
    best_scores = jnp.full((q.shape[0], k), -jnp.inf, jnp.float32)
    best_indices = jnp.full((q.shape[0], k), -1, jnp.int32)
    for start in range(0, num_items, chunk_size):
      chunk = np.asarray(gallery[start : start + chunk_size], np.float32)
      if q_start == 0:
        _check_finite(chunk, "gallery", start)
      n = chunk.shape[0]
      if n < chunk_size:  # the last chunk: pad to the common shape (one compilation), mask the padding
        chunk = np.concatenate([chunk, np.zeros((chunk_size - n, width), np.float32)])
      best_scores, best_indices = _merge_chunk(
        q, jnp.asarray(chunk), jnp.int32(n), jnp.int32(start), best_scores, best_indices, k=k
      )
    all_scores.append(np.asarray(best_scores))
    all_indices.append(np.asarray(best_indices).astype(np.int64))
  scores, indices = np.concatenate(all_scores), np.concatenate(all_indices)
  if np.any(indices < 0) or np.any(indices >= num_items):  # a sentinel must never be returned as an item
    raise RuntimeError("top-k search returned an index outside the gallery; please report this as a bug")
  return (scores[0], indices[0]) if single else (scores, indices)


def _check_finite(rows: np.ndarray, what: str, offset: int) -> None:
  bad = non_finite_rows(rows)
  if len(bad):
    raise ValueError(
      f"{what} row {offset + int(bad[0])} has a NaN or infinite value ({len(bad)} such rows"
      + (" in this chunk" if what == "gallery" else "")
      + "): fix or drop it before searching"
    )


def embed_rows(
  embed: Callable[[Any, jax.Array], jax.Array], state: Any, features: np.ndarray, *, batch_size: int = 4096
) -> np.ndarray:
  """Common-space vectors of many feature rows, in fixed-size batches (one compilation, bounded memory).

  Args:
    embed: a family's `embed_video` or `embed_music`: (state, standardised features) -> embeddings.
    state: the model state.
    features: (N, D) standardised features.
    batch_size: rows per call; the last batch is padded.

  Returns:
    (N, E) float32 embeddings.
  """
  features = np.asarray(features, np.float32)
  n = features.shape[0]
  size = max(1, min(batch_size, n))
  fn = jax.jit(embed)
  out = []
  for start in range(0, n, size):
    batch = features[start : start + size]
    valid = batch.shape[0]
    if valid < size:
      batch = np.concatenate([batch, np.zeros((size - valid, features.shape[1]), np.float32)])
    out.append(np.asarray(fn(state, jnp.asarray(batch)))[:valid])
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
