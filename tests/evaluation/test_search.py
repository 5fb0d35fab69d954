"""Tests of evaluation/search.py: chunked exact top-k cosine against numpy, ties, edge cases, batched embedding."""

import jax.numpy as jnp
import numpy as np
import pytest

from emvgan_jax.evaluation import search

# Prime sizes: a transposed axis or an off-by-one chunk boundary cannot pass by coincidence.
Q, G, D = 5, 37, 7


def _data(seed=0, q=Q, g=G, d=D):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((q, d)).astype(np.float32), rng.standard_normal((g, d)).astype(np.float32)


def _float64_cosines(queries, gallery):
  q = np.asarray(queries, np.float64)
  g = np.asarray(gallery, np.float64)
  return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T


def _numpy_top_k(queries, gallery, k):
  """The reference: float64 cosine and a stable sort by decreasing similarity (ties: lower index first)."""
  sim = _float64_cosines(queries, gallery)
  order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(sim, order, axis=1), order


def assert_float64_ranking(indices, queries, gallery):
  """What the search promises on any CPU (`search.float32_score_error`): at every rank, an item whose float64
  cosine is that rank's float64 cosine within twice the float32 error, no item twice, and items of exactly equal
  float64 cosine (equal rows) in gallery order."""
  indices = np.atleast_2d(indices)
  sim = _float64_cosines(np.atleast_2d(queries), gallery)
  k = indices.shape[1]
  want = -np.sort(-sim, axis=1)[:, :k]
  got = np.take_along_axis(sim, indices, axis=1)
  tolerance = 2 * search.float32_score_error(gallery.shape[1])
  np.testing.assert_array_less(np.abs(got - want), tolerance, err_msg="an item ranks where float64 does not put it")
  for row, scores in zip(indices, got):
    assert len(set(row.tolist())) == len(row)
    tied = scores[1:] == scores[:-1]
    assert np.all(row[1:][tied] > row[:-1][tied]), "equal scores out of gallery order"


# (k, chunk_size): chunks that do not divide 37, k larger than a chunk, one chunk, k > G, chunk > G.
@pytest.mark.parametrize("k,chunk_size", [(3, 4), (10, 4), (6, 37), (50, 6), (7, 1000), (37, 10)])
def test_top_k_matches_numpy_and_unchunked(k, chunk_size):
  queries, gallery = _data()
  scores, indices = search.top_k_cosine(queries, gallery, k, chunk_size=chunk_size)
  ref_scores, _ = _numpy_top_k(queries, gallery, min(k, G))
  assert indices.shape == (Q, min(k, G)) and indices.dtype == np.int64
  assert_float64_ranking(indices, queries, gallery)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  whole_scores, whole_indices = search.top_k_cosine(queries, gallery, k, chunk_size=G)
  np.testing.assert_array_equal(indices, whole_indices)
  np.testing.assert_allclose(scores, whole_scores, atol=1e-6)


def test_ties_are_ordered_by_gallery_index_across_chunks():
  queries, base = _data(seed=1, g=6)
  # Every row three times (rows i, i+6, i+12 are equal), so equal scores straddle chunk boundaries.
  gallery = np.concatenate([base, base, base])
  scores, indices = search.top_k_cosine(queries, gallery, 9, chunk_size=4)
  assert_float64_ranking(indices, queries, gallery)
  assert np.all(np.diff(scores, axis=1) <= 0)


def test_scale_invariance_single_query_and_query_blocks():
  queries, gallery = _data(seed=2)
  s1, i1 = search.top_k_cosine(queries[0], gallery, 4, chunk_size=8)
  s2, i2 = search.top_k_cosine(queries[0] * 10.0, gallery * 3.0, 4, chunk_size=8)
  assert s1.shape == (4,) and i1.shape == (4,)
  np.testing.assert_array_equal(i1, i2)
  np.testing.assert_allclose(s1, s2, atol=1e-6)
  # Query blocks smaller than the number of queries give the same result.
  _, blocked = search.top_k_cosine(queries, gallery, 4, chunk_size=8, query_block=2)
  _, whole = search.top_k_cosine(queries, gallery, 4, chunk_size=8)
  np.testing.assert_array_equal(blocked, whole)


def test_errors():
  queries, gallery = _data()
  with pytest.raises(ValueError, match="width"):
    search.top_k_cosine(queries[:, :3], gallery, 2)
  with pytest.raises(ValueError, match="positive"):
    search.top_k_cosine(queries, gallery, 0)
  with pytest.raises(ValueError, match="empty"):
    search.top_k_cosine(queries, gallery[:0], 2)


def test_embed_rows_in_padded_batches():
  features = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
  embed = lambda state, x: x * state["scale"] + 1.0  # noqa: E731
  out = search.embed_rows(embed, {"scale": jnp.float32(2.0)}, features, batch_size=5)
  np.testing.assert_allclose(out, features * 2.0 + 1.0)


def test_non_finite_rows_are_refused_and_no_sentinel_is_ever_an_item():
  queries, gallery = _data()
  bad_query = queries.copy()
  bad_query[2, 0] = np.nan
  with pytest.raises(ValueError, match="query row 2 has a NaN or infinite value"):
    search.top_k_cosine(bad_query, gallery, 3)
  bad_gallery = gallery.copy()
  bad_gallery[-1, :] = np.inf  # in the last, padded chunk
  with pytest.raises(ValueError, match=f"gallery row {len(gallery) - 1} has a NaN or infinite value"):
    search.top_k_cosine(queries, bad_gallery, 3, chunk_size=8)
  # Every k and gallery size, including k above the gallery size and a gallery smaller than a chunk: only real
  # items come back, each once per query.
  for n in (1, 2, 5, 9):
    for k in (1, 3, 12):
      _, idx = search.top_k_cosine(queries, gallery[:n], k, chunk_size=4)
      assert idx.shape == (len(queries), min(k, n)) and idx.min() >= 0 and idx.max() < n
      assert all(len(set(row)) == len(row) for row in idx)
  # A zero query has no direction: every cosine is 0 and the order is the gallery's.
  _, idx = search.top_k_cosine(np.zeros(queries.shape[1], np.float32), gallery, 4)
  np.testing.assert_array_equal(idx, [0, 1, 2, 3])


def _index(gallery, n_devices, chunk_size):
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh({"data": n_devices}, jax.devices()[:n_devices])
  return search.GalleryIndex(gallery, mesh=mesh, chunk_size=chunk_size)


# 37 rows over 8 devices: uneven shards, devices holding only padding, k larger than a device's rows.
@pytest.mark.parametrize("n_devices", [1, pytest.param(2, marks=pytest.mark.slow), 8])
@pytest.mark.parametrize("k,chunk_size", [(3, 4), pytest.param(10, 1, marks=pytest.mark.slow), (50, 6), (7, 1000)])
def test_sharded_index_equals_float64_and_the_chunked_search(n_devices, k, chunk_size):
  queries, gallery = _data(seed=2)
  index = _index(gallery, n_devices, chunk_size)
  scores, indices = index.search(queries, k, query_block=2)  # 5 queries: padded last block
  ref_scores, _ = _numpy_top_k(queries, gallery, min(k, G))
  assert_float64_ranking(indices, queries, gallery)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  chunked_scores, chunked_indices = search.top_k_cosine(queries, gallery, k, chunk_size=chunk_size)
  np.testing.assert_array_equal(indices, chunked_indices)
  assert index.search(queries[0], k)[1].tolist() == indices[0].tolist()  # one query, 1-D


def test_sharded_index_orders_ties_by_row_across_devices():
  queries, base = _data(seed=3, g=6)
  gallery = np.concatenate([base] * 5)  # equal rows on different devices
  _, indices = _index(gallery, 8, 2).search(queries, 12)
  assert_float64_ranking(indices, queries, gallery)


def test_sharded_index_shards_the_gallery_and_refuses_bad_input():
  queries, gallery = _data(seed=4)
  index = _index(gallery, 8, 3)
  chunks = index._chunks  # pylint: disable=protected-access
  assert len(chunks.addressable_shards) == 8
  assert {s.data.shape for s in chunks.addressable_shards} == {(index.chunks_per_device, D, 3)}
  bad = gallery.copy()
  bad[11, 2] = np.nan
  with pytest.raises(ValueError, match="gallery row 11 has a NaN"):
    _index(bad, 8, 3)
  with pytest.raises(ValueError, match="query row 0"):
    index.search(np.full((1, D), np.inf, np.float32), 3)
  with pytest.raises(ValueError, match=r"queries must be a non-empty \(Q, 7\)"):
    index.search(np.ones((2, 5), np.float32), 3)


@pytest.mark.parametrize(
  "rows, most, want",
  [(100_000, 65_536, 50_048), (1_000_000, 65_536, 62_592), (65_536, 65_536, 65_536), (37, 4, 4), (100, 1000, 100)],
)
def test_a_gallery_is_cut_into_as_few_equal_chunks_as_the_size_allows(rows, most, want):
  chunk = search.equal_chunks(rows, most)
  count = -(-rows // chunk)
  assert chunk == want and count == -(-rows // most)  # as few chunks as chunks of `most` rows would be
  assert count * chunk - rows < count * search.TOP_K_BLOCK  # padding: at most the rounding to whole blocks


def test_top_k_through_block_maxima_equals_lax_top_k():
  import jax  # pylint: disable=g-import-not-at-top

  fast = jax.jit(search.top_k_columns, static_argnames=("k", "block"))
  exact = jax.jit(jax.lax.top_k, static_argnames=("k",))
  rng = np.random.default_rng(0)
  for seed in range(8):
    q, c = 3, (64, 96)[seed % 2]  # two shapes, so that each program compiles once
    # Few distinct values: many equal scores, within and across blocks; some -inf (masked) columns.
    sims = rng.integers(0, [3, 5, 40, 1000][seed % 4], size=(q, c)).astype(np.float32)
    sims[rng.random((q, c)) < 0.2] = -np.inf
    for k in (1, 3, 7):
      want = exact(jnp.asarray(sims), k=k)
      for block in (2, 4):
        got = fast(jnp.asarray(sims), k=k, block=block)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]), err_msg=f"k={k} block={block}")


def test_searches_through_block_maxima_equal_float64_with_ties():
  """Chunks of 512 rows, 4 blocks, so that k = 1 and 2 take `top_k_columns`' path through block maxima; equal
  rows across blocks, chunks and devices."""
  rng = np.random.default_rng(4)
  queries = rng.standard_normal((6, 5)).astype(np.float32)
  base = rng.standard_normal((1700, 5)).astype(np.float32)
  gallery = np.concatenate([base, base[::-1], base[:1600]])  # 5,000 rows, each two or three times
  for k in (1, 2):
    assert 2 * k * search.TOP_K_BLOCK <= 512  # the block path, not lax.top_k
    _, indices = search.top_k_cosine(queries, gallery, k, chunk_size=512)
    assert_float64_ranking(indices, queries, gallery)
  # The float32 index's two passes: 8 devices hold 625 rows each, in 2 chunks of 384 rows; blocks of 8 rows (96
  # a device); k = 96 keeps every block of a device, k = 100 more. 1 device: 10 chunks of 512, blocks of 16 and 8.
  for n_devices, ks in ((1, (1, 2, 20)), (8, (1, 2, 96, 100))):
    index = _index(gallery, n_devices, 512)
    for k in ks:
      assert index.chunk_size % index.pass_block(k) == 0 and index.pass_block(k) >= 8
      _, indices = index.search(queries, k)
      assert_float64_ranking(indices, queries, gallery)
  one = [_index(np.ones((n, 64), np.float32), 1, search.DEFAULT_CHUNK_SIZE) for n in (100_000, 1_000_000)]
  assert [index.pass_block(10) for index in one] == [16, 32]
  assert all(index.two_pass(10) for index in one) and not one[1].two_pass(1000)  # 1,000 x 8 x 64 x 4 B a query
  index = _index(gallery, 1, 512)
  assert not index.two_pass(4000)  # one running top k per chunk instead, as exact
  _, indices = index.search(queries, 4000)
  assert_float64_ranking(indices, queries, gallery)


@pytest.mark.parametrize("n_devices", [1, 8])
def test_bfloat16_index_with_its_exact_rerank_equals_float64(n_devices):
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  queries, gallery = _data(seed=5, q=9, g=3000)
  mesh = sharding.make_mesh({"data": n_devices}, jax.devices()[:n_devices])
  index = search.GalleryIndex(gallery, mesh=mesh, chunk_size=256, scores="bfloat16")
  assert {s.data.dtype for s in index._chunks.addressable_shards} == {np.dtype(jnp.bfloat16)}  # pylint: disable=protected-access
  for k in (1, 5):
    assert search.rerank_candidates(k) < len(gallery)  # the re-rank sees a part of the gallery, not all of it
    scores, indices = index.search(queries, k, query_block=4)
    ref_scores, _ = _numpy_top_k(queries, gallery, k)
    assert_float64_ranking(indices, queries, gallery)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)  # exact float32 cosines, not bfloat16 ones
  assert index.fallbacks == 0  # random vectors: no near-ties around the k-th score


def test_bfloat16_index_searches_near_ties_again_exactly():
  rng = np.random.default_rng(6)
  base = rng.standard_normal(D).astype(np.float32)
  # 400 rows close to one direction: their cosines differ by about 1e-5, which bfloat16 cannot resolve (float32
  # resolves most of them; a pair closer than its error may come back in either order, on any CPU).
  near = base + 1e-2 * rng.standard_normal((400, D)).astype(np.float32)
  gallery = np.concatenate([rng.standard_normal((600, D)).astype(np.float32), near])
  queries = np.stack([base, rng.standard_normal(D).astype(np.float32)])
  index = search.GalleryIndex(gallery, chunk_size=256, scores="bfloat16")
  _, indices = index.search(queries, 5)
  assert_float64_ranking(indices, queries, gallery)
  assert index.fallbacks == 1  # the first query: its 84 candidates, then 336, all lie within the error of the 5th
  # 150 near-ties: more than the first 84 candidates, fewer than the 336 of the second pass, which covers them.
  fewer = np.concatenate([gallery[:600], near[:150]])
  index = search.GalleryIndex(fewer, chunk_size=256, scores="bfloat16")
  _, indices = index.search(queries, 5)
  assert_float64_ranking(indices, queries, fewer)
  assert index.fallbacks == 0
  with pytest.raises(ValueError, match="scores must be one of"):
    search.GalleryIndex(gallery, scores="float16")
