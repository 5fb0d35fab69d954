"""InfoNCE over a large global batch: blockwise, sharded, with no B x B array in memory.

`losses.info_nce_loss` is the reference: it builds the B x B logits `S = z_video @ z_music.T / T`, their
transpose for the second direction, and B x B masks of the positives. That costs memory traffic (68% of the
EMVGAN step at batch 4096 on a CPU) and, sharded over the batch, XLA moves the whole logits matrix between
devices with all-to-alls to transpose it. This module computes the same loss from a decomposition:

  l_i^{v->m} = lse_j(S[i, j]) - (1 / |P_i|) sum_{p in P_i} S[i, p],

where the log-sum-exp runs over the valid candidates j. Only the log-sum-exps need the B x B logits; the sum over
the positives of an anchor is `z_i . (sum of its positives' embeddings) / T`, and with emotion positives those
sums are the K per-emotion sums of the valid embeddings, a (K, D) array. The music->video direction needs the
log-sum-exp of each *column* of S, so no transpose is taken: every block of rows adds its part to running
column statistics (a maximum and a sum of exponentials, combined as flash attention does).

`logsumexps` is the only part with B^2 work. It walks the anchors in blocks of `block_rows` rows, so a device holds
`block_rows x B` logits at a time, and has its own backward pass, which recomputes each block's logits rather
than storing them (4 matmuls per block in all, against 3 for the dense loss). The logits are shifted by an
upper bound `c` on all of them (the largest valid row norm of `a` times that of `b`), so one `exp(S - c)` per
logit gives both the row and the column sums, with no maximum taken; where a valid row's or column's sum of
`exp(S - c)` falls below 2^-80 (logits far below the bound), the exact two-pass form with running maxima is
taken instead, by `lax.cond`, and the backward pass follows. (On a GPU a `lax.cond` reads its predicate back
to the host; this has not been measured on one.) Under a mesh with a `data` axis it runs inside
`jax.shard_map`: each device keeps its own rows of the video embeddings, all-gathers the music embeddings
(B x D, not B x B), finishes its rows' log-sum-exps locally and combines the column sums with one `psum` of B
numbers (a `pmax` too on the exact path). Its backward pass sums the music embeddings' gradient with a
reduce-scatter, so each device receives only its shard. No logits cross a device boundary.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from emvgan_jax import losses

Array = jax.Array

DATA_AXIS = "data"
# Rows of logits a block holds, by default: 512 x 4096 float32 logits are 8 MB.
DEFAULT_BLOCK_ROWS = 512


def _blocks(x: Array, block: int) -> Array:
  """(n, ...) -> (n / block, block, ...), padding with zeros to a whole number of blocks."""
  n = x.shape[0]
  pad = -n % block
  if pad:
    x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
  return x.reshape(-1, block, *x.shape[1:])


def _gather(x: Array, axis_name: str | None) -> Array:
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def _local_rows(x_all: Array, n_local: int, axis_name: str | None) -> Array:
  if axis_name is None:
    return x_all
  start = jax.lax.axis_index(axis_name) * n_local
  return jax.lax.dynamic_slice_in_dim(x_all, start, n_local)


# The one-exponential pass is used when every valid row's and column's sum of exp(S - c) is at least this
# (2^-80): each term lost by flushing to zero (below 2^-126) is then below 2^-46 of its sum, and 2^20 of them
# together below 2^-26, under float32's rounding of the sum.
_MIN_SHIFTED_SUM = 2.0**-80


def _shift(a: Array, b_all: Array, valid: Array, valid_all: Array, axis_name: str | None) -> Array:
  """An upper bound on every logit of a valid row and column, `max_i |a_i| * max_j |b_j|` over the valid ones
  (Cauchy-Schwarz), the same on every device. Invalid rows take no part, whatever they hold."""
  a_max = jnp.max(jnp.where(valid, jnp.sum(a * a, axis=1), 0.0), initial=0.0)
  if axis_name is not None:
    a_max = jax.lax.pmax(a_max, axis_name)
  b_max = jnp.max(jnp.where(valid_all, jnp.sum(b_all * b_all, axis=1), 0.0), initial=0.0)
  return jnp.sqrt(a_max) * jnp.sqrt(b_max)


def _smallest(sums: Array, valid: Array) -> Array:
  """The least of the valid entries' sums (infinity when none is valid; NaN if one is NaN)."""
  return jnp.min(jnp.where(valid, sums, jnp.inf), initial=jnp.inf)


def _lse(shift: Array | float, total: Array) -> Array:
  """`shift + log(total)`, 0 where the total is 0 (nothing valid)."""
  return jnp.where(total > 0, shift + jnp.log(jnp.where(total > 0, total, 1.0)), 0.0)


def _shifted_sums(a: Array, b_all: Array, valid: Array, valid_all: Array, c: Array, block: int) -> tuple[Array, Array]:
  """Row and column sums of `exp(S - c)` over the valid columns and rows: one exponential per logit serves
  both directions, and no maximum is taken, since `c` bounds every logit."""

  def one_block(col_sum: Array, xs: tuple[Array, Array]) -> tuple[Array, Array]:
    a_blk, valid_blk = xs
    e = jnp.exp(a_blk @ b_all.T - c)  # (block, B), each in [0, 1]
    return col_sum + jnp.sum(jnp.where(valid_blk[:, None], e, 0.0), axis=0), jnp.sum(
      jnp.where(valid_all[None, :], e, 0.0), axis=1
    )

  col_sum, row_sum = jax.lax.scan(one_block, jnp.zeros((b_all.shape[0],), a.dtype), (_blocks(a, block), valid))
  return row_sum.reshape(-1)[: a.shape[0]], col_sum


def _exact_lses(
  a: Array, b_all: Array, valid: Array, valid_all: Array, block: int, axis_name: str | None
) -> tuple[Array, Array]:
  """Row and column log-sum-exps with a maximum per row and a running maximum per column (flash attention's
  two-pass form): exact for any logits, at two exponentials per logit. `valid` is in blocks."""
  neg = jnp.asarray(-jnp.inf, a.dtype)

  def one_block(carry: tuple[Array, Array], xs: tuple[Array, Array]) -> tuple[tuple[Array, Array], Array]:
    col_max, col_sum = carry
    a_blk, valid_blk = xs
    s = a_blk @ b_all.T  # (block, B)
    # Rows: each anchor's log-sum-exp over the valid candidates, complete within the block.
    s_rows = jnp.where(valid_all[None, :], s, neg)
    row_max = jnp.max(s_rows, axis=1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    row_lse = _lse(row_max[:, 0], jnp.sum(jnp.exp(s_rows - row_max), axis=1))
    # Columns: running maximum and sum of exponentials over the valid rows seen so far.
    s_cols = jnp.where(valid_blk[:, None], s, neg)
    new_max = jnp.maximum(col_max, jnp.max(s_cols, axis=0))
    safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
    col_sum = col_sum * jnp.exp(jnp.where(jnp.isfinite(col_max), col_max - safe_max, -jnp.inf))
    col_sum = col_sum + jnp.sum(jnp.exp(s_cols - safe_max[None, :]), axis=0)
    return (new_max, col_sum), row_lse

  init = (jnp.full((b_all.shape[0],), -jnp.inf, a.dtype), jnp.zeros((b_all.shape[0],), a.dtype))
  (col_max, col_sum), row_lse = jax.lax.scan(one_block, init, (_blocks(a, block), valid))
  if axis_name is not None:  # combine the column statistics of every device's rows
    global_max = jax.lax.pmax(col_max, axis_name)
    safe = jnp.where(jnp.isfinite(global_max), global_max, 0.0)
    col_sum = jax.lax.psum(col_sum * jnp.exp(jnp.where(jnp.isfinite(col_max), col_max - safe, -jnp.inf)), axis_name)
    col_max = global_max
  return row_lse.reshape(-1)[: a.shape[0]], _lse(jnp.where(jnp.isfinite(col_max), col_max, 0.0), col_sum)


def _forward(a: Array, b: Array, valid: Array, block: int, axis_name: str | None) -> tuple[Array, ...]:
  """Row and column log-sum-exps of `a @ b_all.T` (this device's rows `a`, everyone's `b`), and what the backward
  pass needs.

  The sums of `exp(S - c)`, with `c` an upper bound on the logits, give both directions at one exponential per
  logit. Where some valid row or column is so far below the bound that its sum could lose precision (all its
  logits more than about 55 below `c`: low temperatures, or embeddings far from unit norm), every device takes
  the exact two-pass form instead, and the backward pass follows the same choice.
  """
  b_all, valid_all = _gather(b, axis_name), _gather(valid, axis_name) > 0
  valid_blocks = _blocks(valid, block) > 0
  c = _shift(a, b_all, valid > 0, valid_all, axis_name)
  row_sum, col_sum = _shifted_sums(a, b_all, valid_blocks, valid_all, c, block)
  if axis_name is not None:
    col_sum = jax.lax.psum(col_sum, axis_name)
  # Only valid rows and columns are checked: masked rows (zeroed by the loss) must not force the exact path.
  fast = jnp.logical_and(
    _smallest(row_sum, valid > 0) >= _MIN_SHIFTED_SUM, _smallest(col_sum, valid_all) >= _MIN_SHIFTED_SUM
  )
  if axis_name is not None:
    fast = jax.lax.pmin(fast.astype(jnp.int32), axis_name) > 0
  row_lse, col_lse_all = jax.lax.cond(
    fast,
    lambda: (_lse(c, row_sum), _lse(c, col_sum)),
    lambda: _exact_lses(a, b_all, valid_blocks, valid_all, block, axis_name),
  )
  row_lse, col_lse_all = jnp.where(valid > 0, row_lse, 0.0), jnp.where(valid_all, col_lse_all, 0.0)
  residuals = (a, b_all, valid, valid_all, row_lse, col_lse_all, c, fast)
  return row_lse, _local_rows(col_lse_all, n_local=a.shape[0], axis_name=axis_name), residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _lse_pair(a: Array, b: Array, valid: Array, block: int, axis_name: str | None) -> tuple[Array, Array]:
  row_lse, col_lse, _ = _forward(a, b, valid, block, axis_name)
  return row_lse, col_lse


def _lse_pair_fwd(a: Array, b: Array, valid: Array, block: int, axis_name: str | None) -> tuple:
  row_lse, col_lse, residuals = _forward(a, b, valid, block, axis_name)
  return (row_lse, col_lse), residuals


def _lse_pair_bwd(block: int, axis_name: str | None, residuals: tuple, cotangents: tuple[Array, Array]) -> tuple:
  """Recomputes each block's logits; d S = g_row * softmax_rows + g_col * softmax_cols, then two matmuls.

  On the forward pass's one-exponential path the two softmaxes share `exp(S - c)`: `exp(S_ij - lse_i) =
  exp(S_ij - c) * exp(c - lse_i)`, whose second factor is at most 2^80 there (every valid sum passed the test)."""
  a, b_all, valid, valid_all, row_lse, col_lse_all, c, fast = residuals
  g_row, g_col = cotangents
  n_local = a.shape[0]
  g_col_all = _gather(g_col, axis_name)
  valid_blk = _blocks(valid, block) > 0

  def exact_ds(s: Array, v_blk: Array, lse_blk: Array, g_blk: Array) -> Array:
    p_rows = jnp.where(valid_all[None, :] & v_blk[:, None], jnp.exp(s - lse_blk[:, None]), 0.0)
    p_cols = jnp.where(v_blk[:, None] & valid_all[None, :], jnp.exp(s - col_lse_all[None, :]), 0.0)
    return g_blk[:, None] * p_rows + g_col_all[None, :] * p_cols

  col_scale = jnp.where(valid_all, g_col_all * jnp.exp(jnp.where(valid_all, c - col_lse_all, 0.0)), 0.0)

  def shared_ds(s: Array, v_blk: Array, lse_blk: Array, g_blk: Array) -> Array:
    row_scale = jnp.where(v_blk, g_blk * jnp.exp(jnp.where(v_blk, c - lse_blk, 0.0)), 0.0)
    mask = v_blk[:, None] & valid_all[None, :]
    return jnp.where(mask, jnp.exp(s - c) * (row_scale[:, None] + col_scale[None, :]), 0.0)

  def pass_over_blocks(ds_of: object) -> tuple[Array, Array]:
    def one_block(db_all: Array, xs: tuple[Array, ...]) -> tuple[Array, Array]:
      a_blk, v_blk, lse_blk, g_blk = xs
      ds = ds_of(a_blk @ b_all.T, v_blk, lse_blk, g_blk)
      return db_all + ds.T @ a_blk, ds @ b_all

    xs = (_blocks(a, block), valid_blk, _blocks(row_lse, block), _blocks(g_row, block))
    return jax.lax.scan(one_block, jnp.zeros_like(b_all), xs)

  db_all, da = jax.lax.cond(fast, lambda: pass_over_blocks(shared_ds), lambda: pass_over_blocks(exact_ds))
  da = da.reshape(-1, a.shape[1])[:n_local]
  db = db_all if axis_name is None else jax.lax.psum_scatter(db_all, axis_name, tiled=True)
  return da, db, jnp.zeros_like(valid)


_lse_pair.defvjp(_lse_pair_fwd, _lse_pair_bwd)


def logsumexps(
  a: Array,
  b: Array,
  valid: Array,
  *,
  block_rows: int = DEFAULT_BLOCK_ROWS,
  mesh: jax.sharding.AbstractMesh | None = None,
) -> tuple[Array, Array]:
  """Row and column log-sum-exps of `S = a @ b.T` over the valid rows and columns, without storing S.

  Args:
    a: (B, D) row embeddings (already divided by the temperature).
    b: (B, D) column embeddings.
    valid: (B,) bool or 0/1: row i of `a` and row i of `b` take part (as anchors and as candidates).
    block_rows: rows of S held at a time per device.
    mesh: the mesh to shard over (its `data` axis); default: the context mesh (`jax.set_mesh`), and no
      sharding when there is none or its `data` axis has one device.

  Returns:
    `(lse_rows, lse_cols)`, each (B,) and at least float32: `lse_rows[i] = log sum_{j valid} exp S[i, j]` for a
    valid row i, `lse_cols[j] = log sum_{i valid} exp S[i, j]` for a valid column j; 0 for invalid rows and
    columns, whatever they hold.
  """
  if block_rows < 1:
    raise ValueError(f"block_rows must be >= 1, got {block_rows}")
  dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)  # the 2^-80 test needs float32's range
  a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
  valid = jnp.asarray(valid).astype(dtype)
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  n_shards = 1 if mesh is None or mesh.empty or DATA_AXIS not in mesh.axis_names else mesh.shape[DATA_AXIS]
  if n_shards == 1:
    return _lse_pair(a, b, valid, min(block_rows, a.shape[0]), None)
  if a.shape[0] % n_shards:
    raise ValueError(f"a batch of {a.shape[0]} rows does not split over {n_shards} devices on '{DATA_AXIS}'")
  block = min(block_rows, a.shape[0] // n_shards)
  sharded = jax.shard_map(
    functools.partial(_lse_pair, block=block, axis_name=DATA_AXIS),
    mesh=mesh,
    in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
    out_specs=(P(DATA_AXIS), P(DATA_AXIS)),
    check_vma=False,
  )
  return sharded(a, b, valid)


def info_nce_loss(
  z_video: Array,
  z_music: Array,
  *,
  temperature: float | Array,
  mask: Array | None = None,
  video_emotion: Array | None = None,
  music_emotion: Array | None = None,
  emotion_positives: bool = False,
  num_emotions: int | None = None,
  block_rows: int = DEFAULT_BLOCK_ROWS,
  mesh: jax.sharding.AbstractMesh | None = None,
) -> Array:
  """`losses.info_nce_loss`, the same value and gradients, computed blockwise (and sharded under a mesh).

  Args:
    z_video, z_music, temperature, mask, video_emotion, music_emotion, emotion_positives: as in
      `losses.info_nce_loss`.
    num_emotions: the number of emotion classes K, needed with `emotion_positives`: the emotion ids of valid
      rows must lie in [0, K) (masked rows may hold anything, e.g. -1).
    block_rows, mesh: as in `logsumexps`.

  Returns:
    The scalar loss.
  """
  if emotion_positives and (video_emotion is None or music_emotion is None or num_emotions is None):
    raise ValueError("emotion_positives=True needs video_emotion, music_emotion and num_emotions")
  zv = losses._float(z_video)  # pylint: disable=protected-access
  zm = losses._float(z_music)  # pylint: disable=protected-access
  w = losses._weights(mask, zv.shape[0])  # pylint: disable=protected-access
  valid = w > 0
  # Invalid rows are zeroed: they are no one's candidate, and a NaN there must not reach a valid row's value.
  zv = jnp.where(valid[:, None], zv, 0.0)
  zm = jnp.where(valid[:, None], zm, 0.0)
  scaled = zv / temperature
  lse_vm, lse_mv = logsumexps(scaled, zm, valid, block_rows=block_rows, mesh=mesh)
  own = jnp.sum(scaled * zm, axis=-1)  # S[i, i]
  if emotion_positives:
    ev, em = jnp.asarray(video_emotion), jnp.asarray(music_emotion)
    onehot_v = jax.nn.one_hot(ev, num_emotions, dtype=zv.dtype) * valid[:, None]
    onehot_m = jax.nn.one_hot(em, num_emotions, dtype=zv.dtype) * valid[:, None]
    music_sums, video_sums = onehot_m.T @ zm, onehot_v.T @ scaled  # (K, D) per-emotion sums of valid rows
    own_outside = (ev != em).astype(zv.dtype)  # the own pair is a positive that its emotion sum missed
    pos_vm = jnp.sum(scaled * (onehot_v @ music_sums), axis=-1) + own_outside * own
    pos_mv = jnp.sum(zm * (onehot_m @ video_sums), axis=-1) + own_outside * own
    n_vm = onehot_v @ jnp.sum(onehot_m, axis=0) + own_outside
    n_mv = onehot_m @ jnp.sum(onehot_v, axis=0) + own_outside
  else:
    pos_vm = pos_mv = own
    n_vm = n_mv = jnp.ones_like(own)
  per_vm = lse_vm - pos_vm / jnp.maximum(n_vm, 1.0)
  per_mv = lse_mv - pos_mv / jnp.maximum(n_mv, 1.0)
  return 0.5 * (losses.masked_mean(per_vm, w) + losses.masked_mean(per_mv, w))


def _sigmoid_sum(
  zv: Array,
  zm: Array,
  ev: Array,
  em: Array,
  valid: Array,
  scale: Array,
  bias: Array,
  *,
  block: int,
  axis_name: str | None,
) -> tuple[Array, Array]:
  """This device's rows' sum of sigmoid-loss terms against every device's music, and the valid rows' count
  (both summed over the devices). Row blocks are rematerialised in the backward pass: a block x B array at most."""
  zm_all, em_all, valid_all = _gather(zm, axis_name), _gather(em, axis_name), _gather(valid, axis_name)
  n = zv.shape[0]
  own = jnp.arange(n) + (0 if axis_name is None else jax.lax.axis_index(axis_name) * n)  # global row ids

  @jax.checkpoint
  def one_block(total: Array, xs: tuple[Array, ...]) -> tuple[Array, None]:
    zv_blk, ev_blk, valid_blk, own_blk = xs
    logits = scale * (zv_blk @ zm_all.T) + bias
    positive = (own_blk[:, None] == jnp.arange(zm_all.shape[0])[None, :]) | (ev_blk[:, None] == em_all[None, :])
    terms = -jax.nn.log_sigmoid(jnp.where(positive, logits, -logits))
    return total + jnp.sum(jnp.where(valid_blk[:, None] & valid_all[None, :], terms, 0.0)), None

  xs = (_blocks(zv, block), _blocks(ev, block), _blocks(valid, block), _blocks(own, block))  # padding: invalid
  total, _ = jax.lax.scan(one_block, jnp.zeros((), zv.dtype), xs)
  count = jnp.sum(valid).astype(zv.dtype)
  if axis_name is not None:
    total, count = jax.lax.psum(total, axis_name), jax.lax.psum(count, axis_name)
  return total, count


def sigmoid_contrastive_loss(
  z_video: Array,
  z_music: Array,
  *,
  scale: float | Array,
  bias: float | Array,
  mask: Array | None = None,
  video_emotion: Array | None = None,
  music_emotion: Array | None = None,
  emotion_positives: bool = False,
  block_rows: int = DEFAULT_BLOCK_ROWS,
  mesh: jax.sharding.AbstractMesh | None = None,
) -> Array:
  """`losses.sigmoid_contrastive_loss`, the same value and gradients, computed in blocks of rows (and sharded
  under a mesh: each device scores its own video rows against the all-gathered music, B x D; the sums meet in one
  `psum`, and the music's gradient returns by a reduce-scatter. No logits cross a device boundary).

  Args:
    z_video, z_music, scale, bias, mask, video_emotion, music_emotion, emotion_positives: as in
      `losses.sigmoid_contrastive_loss`.
    block_rows, mesh: as in `logsumexps`.

  Returns:
    The scalar loss.
  """
  if emotion_positives and (video_emotion is None or music_emotion is None):
    raise ValueError("emotion_positives=True needs video_emotion and music_emotion")
  if block_rows < 1:
    raise ValueError(f"block_rows must be >= 1, got {block_rows}")
  zv, zm = losses._float(z_video), losses._float(z_music)  # pylint: disable=protected-access
  valid = losses._weights(mask, zv.shape[0]) > 0  # pylint: disable=protected-access
  zv, zm = jnp.where(valid[:, None], zv, 0.0), jnp.where(valid[:, None], zm, 0.0)
  if emotion_positives:
    # Invalid rows take no part; their labels are set apart so that they match nothing either way.
    ev = jnp.where(valid, jnp.asarray(video_emotion, jnp.int32), -1)
    em = jnp.where(valid, jnp.asarray(music_emotion, jnp.int32), -2)
  else:  # no emotion positives: labels that never match
    ev, em = jnp.full(valid.shape, -1, jnp.int32), jnp.full(valid.shape, -2, jnp.int32)
  scale, bias = jnp.asarray(scale, zv.dtype), jnp.asarray(bias, zv.dtype)
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  n_shards = 1 if mesh is None or mesh.empty or DATA_AXIS not in mesh.axis_names else mesh.shape[DATA_AXIS]
  if n_shards == 1:
    total, count = _sigmoid_sum(zv, zm, ev, em, valid, scale, bias, block=min(block_rows, zv.shape[0]), axis_name=None)
  else:
    if zv.shape[0] % n_shards:
      raise ValueError(f"a batch of {zv.shape[0]} rows does not split over {n_shards} devices on '{DATA_AXIS}'")
    sharded = jax.shard_map(
      functools.partial(_sigmoid_sum, block=min(block_rows, zv.shape[0] // n_shards), axis_name=DATA_AXIS),
      mesh=mesh,
      in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P(), P()),
      out_specs=(P(), P()),
      check_vma=False,
    )
    total, count = sharded(zv, zm, ev, em, valid, scale, bias)
  return total / jnp.maximum(count, 1.0)
