"""Exact cosine top-k search over galleries of any size, and batched embedding of raw feature rows.

`top_k_cosine` never builds the full (queries x gallery) similarity matrix: it walks the gallery in chunks of a
fixed size, takes each chunk's top k with a jitted matrix product and `top_k_columns` (`jax.lax.top_k`'s
answer, through block maxima), and merges that into a running top k. Memory is O(queries x chunk); a
million-item gallery costs a million-wide matrix at no point. Every chunk has the same shape (the last one is
padded and masked), so the search compiles once.

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
from emvgan_jax.runtime import sharding

DEFAULT_CHUNK_SIZE = 65536
DEFAULT_QUERY_BLOCK = 1024
TOP_K_BLOCK = 128  # columns per block of `top_k_columns`
PASS_CHUNK = 4096  # gallery rows per matmul of the float32 index's first pass: its (1,024 x 4,096) scores fit a cache
PASS_BYTES_PER_QUERY = 1 << 19  # most bytes of rows per query in the second pass (k x block x D float32); 512 MiB
# for 1,024 queries. A larger k is searched in one pass (`GalleryIndex.two_pass`).
SCORE_DTYPES = ("float32", "bfloat16")


def rerank_candidates(k: int) -> int:
  """How many candidates a bfloat16 index keeps per query for its exact re-rank of the top `k` (4k + 64)."""
  return 4 * k + 64


def float32_score_error(width: int) -> float:
  """A bound on |float32 cosine - exact cosine| for rows of `width` values normalised in float32 (u = 2^-24):
  normalising moves each unit vector by at most (width / 2 + 2) u, and a float32 sum of `width` products of unit
  vectors adds at most `width` u, so the score moves by at most (2 width + 4) u = (width + 2) 2^-23.

  Float32 cannot order items closer than twice this: which of two such items ranks first depends on the order of
  the sums, which differs between CPUs (AVX-512 or not), backends and the host's re-rank. The search promises the
  float64 ranking except among items whose float64 scores lie within `2 * float32_score_error(width)` of each
  other; items with exactly equal scores (equal rows) are ordered by gallery index.
  """
  return (width + 2) * 2.0**-23


def bfloat16_score_error(width: int) -> float:
  """A bound on |bfloat16 score - float32 cosine| for unit vectors of `width` values: rounding each vector to
  bfloat16 (unit roundoff u = 2^-8) moves it by at most u of its norm, so the product moves by at most u (2 + u);
  a float32 sum of `width` terms adds at most `width` * 2^-23 (a generous bound on its rounding)."""
  u = 2.0**-8
  return u * (2 + u) + width * 2.0**-23


def top_k_columns(sims: jax.Array, k: int, *, block: int = TOP_K_BLOCK) -> tuple[jax.Array, jax.Array]:
  """`jax.lax.top_k(sims, k)` of (Q, C) scores, the same scores and columns (ties to the lower column), found
  through the maxima of blocks of `block` columns.

  The k best columns of a row lie in at most k blocks, and those blocks are the row's k best by their maxima
  (a block ranked behind k others holds nothing that ranks ahead of their k maxima; equal maxima go to the lower
  block, as equal scores go to the lower column). So each row takes the top k of its C / block maxima, then the
  top k of those k blocks' k x block columns, in column order. `lax.top_k` over every column is what the search
  spent most of a chunk's time on besides the matmul; a block's maximum is one cheap pass. Where C is not a
  multiple of `block`, or the k blocks would be more than half the columns, it is `lax.top_k` itself.
  """
  q, c = sims.shape
  if block < 2 or c % block or 2 * k * block > c:
    return jax.lax.top_k(sims, k)
  blocks = sims.reshape(q, c // block, block)
  _, best = jax.lax.top_k(blocks.max(axis=2), k)
  best = jnp.sort(best, axis=1)  # the candidates in column order, so that ties still go to the lower column
  candidates = jnp.take_along_axis(blocks, best[:, :, None], axis=1).reshape(q, k * block)
  scores, pos = jax.lax.top_k(candidates, k)
  columns = (best[:, :, None] * block + jnp.arange(block, dtype=best.dtype)).reshape(q, k * block)
  return scores, jnp.take_along_axis(columns, pos, axis=1)


def _chunk_rows(rows: int) -> int:
  """A chunk of at least `rows` rows, rounded up to whole `top_k_columns` blocks when it spans several."""
  return -(-rows // TOP_K_BLOCK) * TOP_K_BLOCK if rows > TOP_K_BLOCK else rows


def equal_chunks(rows: int, most: int) -> int:
  """The chunk size that cuts `rows` rows into as few chunks of at most about `most` rows as possible, all of one
  size: 100,000 rows in chunks of up to 65,536 are two chunks of 50,048 (100,096 columns computed), not two of
  65,536 (131,072 columns, 31% of them padding)."""
  count = -(-rows // max(1, most))
  return _chunk_rows(-(-rows // count))


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
  chunk_scores, chunk_indices = top_k_columns(sims, min(k, chunk.shape[0]))
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
  chunk_size = equal_chunks(num_items, int(chunk_size))  # equal chunks: little padding after the last row
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


def _merge_devices(scores: jax.Array, indices: jax.Array, axis: str, k: int) -> tuple[jax.Array, jax.Array]:
  """Every device's top k, gathered in device order (lower gallery rows first), then the top k of those."""
  scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)
  indices = jax.lax.all_gather(indices, axis, axis=1, tiled=True)
  top, where = jax.lax.top_k(scores, min(k, scores.shape[1]))
  return top, jnp.take_along_axis(indices, where, axis=1)


class GalleryIndex:
  """A gallery normalised once, transposed, cut into equal chunks and sharded over devices, for exact top-k.

  Each device holds `chunks_per_device` chunks of the (D, chunk) transposed gallery (the matmul's natural
  operand), so a gallery larger than one device's memory fits on several. `search` runs on every device at
  once (`jax.shard_map`): each finds the top k of its own rows (in float32, in two passes: the maxima of small
  blocks of rows, then the rows of the k best blocks scored again, `_two_pass`), then the devices' top k are
  all-gathered (k numbers per query each) and merged. Memory per device: the first pass keeps rows / block
  maxima per query (`pass_block`; 1,024 queries x 1M rows: 128 MB), the second k x block x D values per query;
  a k whose second pass would hold more (`two_pass`) is searched with one running top k per chunk instead.
  Device d holds rows before device d + 1's, and every merge puts lower rows first, so ties are ordered by
  gallery row as in `top_k_cosine`. Its ids equal that search's, up to rounding: two items within one float32
  rounding of each other may swap.

  With `scores='bfloat16'` the devices hold the gallery in bfloat16 (half the memory; the matrix units of GPUs
  and TPUs run bfloat16 products at several times their float32 rate) and score in bfloat16 with float32 sums.
  Each query keeps its `rerank_candidates(k)` best by those scores, which are re-scored exactly in float32 from
  the host's gallery, and the top k of the exact scores is returned. The result is the float32 search's
  whenever every item that could belong in the top k is among the candidates: a bfloat16 score is within
  `e = bfloat16_score_error(D)` of the exact one, so an item of the exact top k scores at least `t - 2e` in
  bfloat16, `t` being the k-th best bfloat16 score. A query whose last candidate scores `t - 2e` or more
  (too many near-ties) is scored again from four times as many candidates; one that those do not cover either
  is searched exactly on the host (`top_k_cosine`), and `fallbacks` counts those. The re-rank reads the
  gallery passed in, which must not change while the index is used.

  Args:
    gallery: (G, D) vectors (any scale; normalised here, in float32, once). The bfloat16 index keeps a
      reference to it for the re-rank (a memory-mapped array stays on disk).
    mesh: the devices and their `data` axis to shard over (default: every device on one axis).
    chunk_size: rows per matmul (per device step): memory is about queries x chunk_size scores per device.
    scores: 'float32' (exact on the devices) or 'bfloat16' (with the exact re-rank).
  """

  def __init__(
    self,
    gallery: Any,
    *,
    mesh: jax.sharding.Mesh | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    scores: str = "float32",
  ):
    gallery = np.asarray(gallery)
    if gallery.ndim != 2 or gallery.shape[0] == 0:
      raise ValueError(f"gallery must be a non-empty (G, D) array, got shape {gallery.shape}")
    if chunk_size < 1:
      raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if scores not in SCORE_DTYPES:
      raise ValueError(f"scores must be one of {SCORE_DTYPES}, got {scores!r}")
    self.scores = scores
    self.fallbacks = 0  # queries the bfloat16 index searched again on the host
    self._host = gallery if scores == "bfloat16" else None
    dtype = np.float32 if scores == "float32" else jnp.bfloat16
    for start in range(0, gallery.shape[0], DEFAULT_CHUNK_SIZE):  # in float32, what is searched (1e39 is inf)
      _check_finite(gallery[start : start + DEFAULT_CHUNK_SIZE].astype(np.float32), "gallery", start)
    self.mesh = sharding.make_mesh() if mesh is None else mesh
    n_dev = self.mesh.shape[sharding.DATA_AXIS]
    self.size, self.width = gallery.shape
    most = min(int(chunk_size), PASS_CHUNK) if scores == "float32" else int(chunk_size)
    self.chunk_size = equal_chunks(-(-self.size // n_dev), most)  # each device's rows, in equal chunks
    per_device = -(-self.size // (n_dev * self.chunk_size))  # chunks per device
    self.chunks_per_device = per_device
    n_chunks = n_dev * per_device
    self._axis = sharding.DATA_AXIS
    spec = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self._axis))

    def chunks(index: tuple[slice, ...]) -> np.ndarray:  # the (chunks, D, chunk) block one device holds
      wanted = range(*index[0].indices(n_chunks))
      block = np.zeros((len(wanted), self.width, self.chunk_size), dtype)
      for j, c in enumerate(wanted):
        rows = l2_normalize(gallery[c * self.chunk_size : (c + 1) * self.chunk_size].astype(np.float32))
        block[j, :, : rows.shape[0]] = rows.T.astype(dtype)
      return block

    # Each device's block is made from the host gallery when placed (any mesh: several processes, a model axis).
    self._chunks = jax.make_array_from_callback((n_chunks, self.width, self.chunk_size), spec, chunks)
    self._search = {}

  def _program(self, k: int) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    if k not in self._search:
      self._search[k] = jax.jit(self._two_pass(k) if self.two_pass(k) else self._sharded(k))
    return self._search[k]

  def two_pass(self, k: int) -> bool:
    """Whether the top `k` is searched in two passes: a float32 index, and k blocks' rows per query within
    `PASS_BYTES_PER_QUERY` (else one running top k per chunk, whose memory grows with k less steeply)."""
    return self.scores == "float32" and 4 * k * self.pass_block(k) * self.width <= PASS_BYTES_PER_QUERY

  def pass_block(self, k: int) -> int:
    """Rows per block of the two-pass search for the top `k`: the first pass keeps (rows / block) maxima per query,
    the second scores k x block rows per query again; a power of two near sqrt(rows / (k x width)) balances the
    two (16 for 100,000 rows of 64 values and k = 10; 32 for 1,000,000), within [8, 128] and dividing a chunk."""
    rows = self.chunks_per_device * self.chunk_size
    block = 2 ** round(np.log2(max(1.0, np.sqrt(rows / (k * self.width)))))
    block = min(128, max(8, block))
    return block if self.chunk_size % block == 0 else self.chunk_size

  def _two_pass(self, k: int) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """The float32 search, in two passes over each device's rows.

    First, every chunk's (queries x chunk) scores, small enough to stay in cache, are reduced to the maximum of
    each block of `pass_block(k)` rows: one matmul and one pass over scores that are still in cache, no top k per
    chunk. A query's k best rows lie in its k blocks of highest maxima (as in `top_k_columns`: a block behind
    k others holds nothing ahead of their maxima; equal maxima go to the lower block). Second, only those k
    blocks are scored again (k x block rows per query) and their top k taken, in row order, so that equal
    scores still go to the lower row.
    """
    axis, size, chunk, per_device = self._axis, self.size, self.chunk_size, self.chunks_per_device
    block = self.pass_block(k)
    per_chunk = chunk // block
    blocks = per_device * per_chunk
    kept = min(k, blocks)  # blocks kept per query
    local_k = min(k, kept * block)
    P = jax.sharding.PartitionSpec  # noqa: N806
    highest = jax.lax.Precision.HIGHEST

    def local(queries: jax.Array, chunks: jax.Array) -> tuple[jax.Array, jax.Array]:
      q = queries.shape[0]
      first_row = jax.lax.axis_index(axis) * per_device * chunk

      def maxima(carry: None, xs: tuple[jax.Array, jax.Array]) -> tuple[None, jax.Array]:
        gallery_t, c = xs
        sims = jnp.matmul(queries, gallery_t, precision=highest)  # (Q, chunk)
        rows = first_row + c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        sims = jnp.where(rows[None, :] < size, sims, -jnp.inf)
        return carry, sims.reshape(q, per_chunk, block).max(axis=2)

      _, block_max = jax.lax.scan(maxima, None, (chunks, jnp.arange(per_device, dtype=jnp.int32)))
      block_max = block_max.transpose(1, 0, 2).reshape(q, blocks)  # (Q, blocks), in row order
      _, best = jax.lax.top_k(block_max, kept)
      best = jnp.sort(best, axis=1)  # in row order: equal scores go to the lower row
      rows_t = chunks.reshape(per_device, self.width, per_chunk, block)
      candidates = rows_t[best // per_chunk, :, best % per_chunk, :]  # (Q, kept, D, block)
      scores = jnp.einsum("qd,qkdc->qkc", queries, candidates, precision=highest).reshape(q, kept * block)
      rows = first_row + (best[:, :, None] * block + jnp.arange(block, dtype=jnp.int32)).reshape(q, kept * block)
      top, where = jax.lax.top_k(jnp.where(rows < size, scores, -jnp.inf), local_k)
      return _merge_devices(top, jnp.take_along_axis(rows, where, axis=1), axis, k)

    return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(axis)), out_specs=(P(), P()), check_vma=False)

  def _sharded(self, k: int) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    axis, size, chunk, per_device = self._axis, self.size, self.chunk_size, self.chunks_per_device
    local_k = min(k, per_device * chunk)
    P = jax.sharding.PartitionSpec  # noqa: N806

    def local(queries: jax.Array, chunks: jax.Array) -> tuple[jax.Array, jax.Array]:
      first_chunk = jax.lax.axis_index(axis) * per_device

      def one(carry: tuple[jax.Array, jax.Array], xs: tuple[jax.Array, jax.Array]) -> tuple:
        best_scores, best_indices = carry
        gallery_t, c = xs
        if gallery_t.dtype == jnp.float32:
          sims = jnp.matmul(queries, gallery_t, precision=jax.lax.Precision.HIGHEST)  # (Q, chunk)
        else:  # bfloat16 products, float32 sums
          sims = jnp.matmul(queries.astype(gallery_t.dtype), gallery_t, preferred_element_type=jnp.float32)
        rows = (first_chunk + c) * chunk + jnp.arange(chunk, dtype=jnp.int32)
        sims = jnp.where(rows[None, :] < size, sims, -jnp.inf)
        chunk_scores, pos = top_k_columns(sims, min(local_k, chunk))
        scores = jnp.concatenate([best_scores, chunk_scores], axis=1)
        indices = jnp.concatenate([best_indices, rows[pos]], axis=1)
        top, where = jax.lax.top_k(scores, local_k)
        return (top, jnp.take_along_axis(indices, where, axis=1)), None

      init = (
        jnp.full((queries.shape[0], local_k), -jnp.inf, jnp.float32),
        jnp.full((queries.shape[0], local_k), -1, jnp.int32),
      )
      (scores, indices), _ = jax.lax.scan(one, init, (chunks, jnp.arange(per_device, dtype=jnp.int32)))
      return _merge_devices(scores, indices, axis, k)

    return jax.shard_map(local, mesh=self.mesh, in_specs=(P(), P(axis)), out_specs=(P(), P()), check_vma=False)

  def search(self, queries: Any, k: int, *, query_block: int = DEFAULT_QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows most cosine-similar to each query, exactly: as `top_k_cosine` returns them."""
    queries = np.asarray(queries, np.float32)
    single = queries.ndim == 1
    queries = queries[None, :] if single else queries
    if queries.ndim != 2 or queries.shape[1] != self.width or queries.shape[0] == 0:
      raise ValueError(f"queries must be a non-empty (Q, {self.width}) array, got shape {queries.shape}")
    if k < 1 or query_block < 1:
      raise ValueError(f"k and query_block must be positive, got {k}, {query_block}")
    _check_finite(queries, "query", 0)
    k = min(int(k), self.size)
    block = min(query_block, queries.shape[0])
    out_scores, out_indices = [], []
    for start in range(0, queries.shape[0], block):  # the re-rank too, so host memory stays a block's
      q = queries[start : start + block]
      if self.scores == "float32":
        scores, indices = self._device_top(q, k, block)
      else:
        scores, indices = self._bfloat16_top(q, k, block)
      out_scores.append(scores)
      out_indices.append(indices)
    scores, indices = np.concatenate(out_scores), np.concatenate(out_indices)
    return (scores[0], indices[0]) if single else (scores, indices)

  def _device_top(self, queries: np.ndarray, kept: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The devices' top `kept` of up to `block` queries (padded to `block`: one compiled shape per `kept`)."""
    n = queries.shape[0]
    if n < block:
      queries = np.concatenate([queries, np.zeros((block - n, self.width), np.float32)])
    scores, indices = self._program(kept)(l2_normalize(jnp.asarray(queries)), self._chunks)
    scores, indices = np.asarray(scores)[:n], np.asarray(indices)[:n].astype(np.int64)
    if np.any(indices < 0) or np.any(indices >= self.size):
      raise RuntimeError("top-k search returned an index outside the gallery; please report this as a bug")
    return scores, indices

  def _bfloat16_top(self, queries: np.ndarray, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top k through bfloat16 candidates: `rerank_candidates(k)` of them, then 4 times as many for the
    queries those might not cover, then an exact search on the host for any still uncovered."""
    scores = np.zeros((len(queries), k), np.float32)
    indices = np.zeros((len(queries), k), np.int64)
    todo = np.arange(len(queries))
    for kept in (rerank_candidates(k), 4 * rerank_candidates(k)):
      kept = min(kept, self.size)
      approx, candidates = self._device_top(queries[todo], kept, block)
      got_scores, got_indices, covered = self._rerank(queries[todo], approx, candidates, k)
      scores[todo[covered]], indices[todo[covered]] = got_scores[covered], got_indices[covered]
      todo = todo[~covered]
      if not len(todo) or kept == self.size:
        break
    if len(todo):
      scores[todo], indices[todo] = top_k_cosine(queries[todo], self._host, k)
      self.fallbacks += len(todo)
    return scores, indices

  def _rerank(
    self, queries: np.ndarray, approx: np.ndarray, candidates: np.ndarray, k: int
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact float32 top k among each query's candidates (ties to the lower row), and whether the candidates
    surely hold every item of the query's exact top k: all of them, or a last candidate more than twice the
    bfloat16 error below the k-th."""
    q = l2_normalize(queries.astype(np.float32))
    rows = l2_normalize(self._host[candidates.reshape(-1)].astype(np.float32)).reshape(*candidates.shape, -1)
    exact = np.einsum("qd,qmd->qm", q, rows).astype(np.float32)
    order = np.lexsort((candidates, -exact), axis=1)[:, :k]
    scores, indices = np.take_along_axis(exact, order, 1), np.take_along_axis(candidates, order, 1)
    margin = 2 * bfloat16_score_error(self.width)
    covered = approx[:, -1] < approx[:, k - 1] - margin
    if candidates.shape[1] >= self.size:
      covered[:] = True
    return scores, indices, covered


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
