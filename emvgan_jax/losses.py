"""Losses of the EmoMV benchmark models and of EMVGAN (docs/models.md, sections 1 and 2).

Every function here is pure `jax.numpy`, jittable, and returns a scalar. Each takes an optional `mask` of shape
(B,): bool or 0/1 (or non-negative float) weights that mark the valid rows of a padded batch. A loss is the
weighted mean over the valid rows only, so a masked row changes nothing, and a batch with no valid row gives 0
(not NaN), which keeps padded last batches and empty shards harmless under `jit`.

Masked rows may hold placeholder values (zero embeddings, label -1): per-row values of masked rows are replaced
before the reduction, so even a non-finite masked row cannot turn the loss value into NaN. Gradients stay finite
as long as padded inputs are finite (zeros are the convention): JAX's `where` passes `0 * NaN` back through a
masked NaN input.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from emvgan_jax.ops import l2_normalize

Array = jax.Array


def _float(x: Array) -> Array:
  """Promotes to at least float32: the reductions below lose too much in bfloat16/float16."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _rows(logits: Array) -> Array:
  """Accepts (B,) or (B, 1) discriminator logits and returns (B,)."""
  logits = _float(logits)
  if logits.ndim == 2 and logits.shape[-1] == 1:
    logits = logits[:, 0]
  if logits.ndim != 1:
    raise ValueError(f"expected logits of shape (B,) or (B, 1), got {logits.shape}")
  return logits


def _weights(mask: Array | None, batch: int) -> Array:
  """The (B,) float weights of a mask (all ones when there is none)."""
  if mask is None:
    return jnp.ones((batch,), jnp.float32)
  mask = jnp.asarray(mask)
  if mask.shape != (batch,):
    raise ValueError(f"mask must have shape ({batch},), got {mask.shape}")
  return _float(mask)


def masked_mean(values: Array, mask: Array | None = None) -> Array:
  """Weighted mean of per-row values over the valid rows; 0 when no row is valid.

  Args:
    values: (B,) per-row values.
    mask: optional (B,) bool or non-negative weights; None means every row is valid.

  Returns:
    The scalar `sum(w * values) / sum(w)`, or 0 when `sum(w) == 0`.
  """
  values = _float(values)
  w = _weights(mask, values.shape[0])
  # Replace masked values first: 0 * NaN is NaN, and a masked row must not be able to poison the mean.
  values = jnp.where(w > 0, values, 0.0)
  total = jnp.sum(w)
  return jnp.sum(w * values) / jnp.where(total > 0, total, 1.0)


def margin_contrastive_loss(
  video_emb: Array, music_emb: Array, match: Array, *, margin: float = 1.0, mask: Array | None = None
) -> Array:
  """EmoMV's contrastive loss on (video, music) pairs.

  `d_i = 1 - cos(v_i, a_i)`, `L = mean_i [ y_i d_i^2 + (1 - y_i) max(0, margin - d_i)^2 ] / 2`. Pairs are the
  batch's rows; there are no in-batch negatives (docs/models.md, section 1).

  Args:
    video_emb: (B, D) video embeddings (need not be normalised; the cosine normalises).
    music_emb: (B, D) music embeddings.
    match: (B,) 1 for matched pairs, 0 for mismatched (bool or numeric).
    margin: the margin m on the cosine distance.
    mask: optional (B,) validity weights.

  Returns:
    The scalar loss.
  """
  v = l2_normalize(_float(video_emb))
  a = l2_normalize(_float(music_emb))
  y = _float(match)
  d = 1.0 - jnp.sum(v * a, axis=-1)
  per_row = y * d**2 + (1.0 - y) * jnp.maximum(0.0, margin - d) ** 2
  return 0.5 * masked_mean(per_row, mask)


def info_nce_loss(
  z_video: Array,
  z_music: Array,
  *,
  temperature: float | Array,
  mask: Array | None = None,
  video_emotion: Array | None = None,
  music_emotion: Array | None = None,
  emotion_positives: bool = False,
) -> Array:
  """Symmetric InfoNCE over the batch, optionally with same-emotion items as extra positives.

  Logits are `S = z_video @ z_music.T / temperature`. Row i takes part (as an anchor and as a candidate) when
  `mask[i] > 0`; masked candidates get a very large negative logit, so they receive no probability. For the
  video->music direction, anchor i (video) has the positive set

    P_i = {i} if not emotion_positives,
    P_i = {i} U {j valid : music_emotion[j] == video_emotion[i]} otherwise,

  and the per-anchor loss is the supervised-contrastive "mean outside the log" form (Khosla et al. 2020, L_out):

    l_i = -(1 / |P_i|) * sum_{p in P_i} log softmax_j(S[i, j])[p],   softmax over valid candidates j.

  The own counterpart i is always a positive, even if its labels disagree, so pair identity is never pushed
  away. The music->video direction is the same on `S.T` with the roles of the emotion labels swapped. The result
  is `(mean_i l_i^{v->m} + mean_i l_i^{m->v}) / 2`, each mean weighted by `mask` over valid anchors; a batch with
  no valid row gives 0.

  Args:
    z_video: (B, D) video embeddings (normally L2-normalised).
    z_music: (B, D) music embeddings.
    temperature: positive scalar; may be a traced (learned) value.
    mask: optional (B,) weights; training passes `matched & valid`.
    video_emotion: (B,) int emotion ids of the videos; required with `emotion_positives`.
    music_emotion: (B,) int emotion ids of the music clips; required with `emotion_positives`.
    emotion_positives: count every same-emotion cross-modal item as a positive.

  Returns:
    The scalar loss.
  """
  if emotion_positives and (video_emotion is None or music_emotion is None):
    raise ValueError("emotion_positives=True needs video_emotion and music_emotion")
  zv = _float(z_video)
  zm = _float(z_music)
  batch = zv.shape[0]
  w = _weights(mask, batch)
  valid = w > 0
  logits = (zv @ zm.T) / temperature
  # A finite stand-in for -inf: a fully masked row then gives a finite log-softmax (no NaN, no NaN gradient),
  # and half of the dtype's minimum cannot overflow when log_softmax subtracts the row maximum.
  big_negative = 0.5 * jnp.finfo(logits.dtype).min
  pair_valid = valid[:, None] & valid[None, :]

  eye = jnp.eye(batch, dtype=bool)
  if emotion_positives:
    ev = jnp.asarray(video_emotion)
    em = jnp.asarray(music_emotion)
    # pos_vm[i, j]: music j is a positive for video anchor i; pos_mv[i, j]: video j for music anchor i.
    pos_vm = eye | (ev[:, None] == em[None, :])
    pos_mv = eye | (em[:, None] == ev[None, :])
  else:
    pos_vm = pos_mv = eye

  def direction(scores: Array, positives: Array) -> Array:
    scores = jnp.where(pair_valid, scores, big_negative)
    log_prob = jax.nn.log_softmax(scores, axis=-1)
    positives = positives & pair_valid
    n_pos = jnp.sum(positives, axis=-1)
    # Masked entries hold about -1e38: select them away rather than multiply by 0.
    summed = jnp.sum(jnp.where(positives, log_prob, 0.0), axis=-1)
    per_anchor = -summed / jnp.maximum(n_pos, 1)
    return masked_mean(per_anchor, w)

  return 0.5 * (direction(logits, pos_vm) + direction(logits.T, pos_mv))


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
) -> Array:
  """The pairwise sigmoid loss of SigLIP (Zhai et al., "Sigmoid loss for language image pre-training", ICCV 2023):
  every (video i, music j) pair of valid rows is its own binary decision,

    L = -(1 / n) sum_{i, j valid} log sigmoid(y_ij (scale * z_video_i . z_music_j + bias)),

  with n the number of valid rows and y_ij = +1 for a positive, -1 otherwise. The positives are those of
  `info_nce_loss`: the own counterpart (j = i), and with `emotion_positives` every j whose music has video i's
  emotion. There is no softmax over the batch: no normalisation couples the rows, which is what makes it cheap to
  shard (`contrastive.sigmoid_contrastive_loss`, the same value computed blockwise). A batch with no valid row
  gives 0.

  Args:
    z_video, z_music: (B, D) embeddings (normally L2-normalised).
    scale: the logit scale t (SigLIP learns log t); may be traced.
    bias: the logit bias b (SigLIP learns it, from -10 at 32k pairs a batch); may be traced.
    mask, video_emotion, music_emotion, emotion_positives: as in `info_nce_loss`.

  Returns:
    The scalar loss.
  """
  if emotion_positives and (video_emotion is None or music_emotion is None):
    raise ValueError("emotion_positives=True needs video_emotion and music_emotion")
  zv, zm = _float(z_video), _float(z_music)
  valid = _weights(mask, zv.shape[0]) > 0
  zv, zm = jnp.where(valid[:, None], zv, 0.0), jnp.where(valid[:, None], zm, 0.0)
  positive = jnp.eye(zv.shape[0], dtype=bool)
  if emotion_positives:
    positive = positive | (jnp.asarray(video_emotion)[:, None] == jnp.asarray(music_emotion)[None, :])
  logits = scale * (zv @ zm.T) + bias
  terms = -jax.nn.log_sigmoid(jnp.where(positive, logits, -logits))
  total = jnp.sum(jnp.where(valid[:, None] & valid[None, :], terms, 0.0))
  return total / jnp.maximum(jnp.sum(valid), 1).astype(total.dtype)


def softmax_cross_entropy(logits: Array, labels: Array, *, mask: Array | None = None) -> Array:
  """Mean softmax cross-entropy with integer labels.

  Args:
    logits: (B, K) unnormalised scores.
    labels: (B,) int class ids in [0, K); masked rows may hold anything (e.g. -1).
    mask: optional (B,) validity weights.

  Returns:
    The scalar loss.
  """
  logits = _float(logits)
  labels = jnp.asarray(labels)
  w = _weights(mask, logits.shape[0])
  # Masked rows may carry a placeholder label; give them a legal one so the gather stays in range.
  labels = jnp.where(w > 0, labels, 0)
  per_row = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return masked_mean(per_row, w)


def sigmoid_binary_cross_entropy(logits: Array, labels: Array, *, mask: Array | None = None) -> Array:
  """Mean binary cross-entropy from logits (numerically stable).

  Args:
    logits: (B,) or (B, 1) logits.
    labels: (B,) targets in [0, 1] (soft targets allowed).
    mask: optional (B,) validity weights.

  Returns:
    The scalar loss.
  """
  logits = _rows(logits)
  labels = _float(labels).reshape(logits.shape)
  per_row = optax.sigmoid_binary_cross_entropy(logits, labels)
  return masked_mean(per_row, mask)


def _bce_const(logits: Array, target: float, mask: Array | None) -> Array:
  logits = _rows(logits)
  return sigmoid_binary_cross_entropy(logits, jnp.full(logits.shape, target, logits.dtype), mask=mask)


def discriminator_loss(logits_video: Array, logits_music: Array, *, mask: Array | None = None) -> Array:
  """Modality discriminator loss `BCE(D(z_video), 1) + BCE(D(z_music), 0)`.

  D outputs the logit that an embedding came from video. The caller applies the stop-gradient to the
  embeddings (docs/models.md, section 2).

  Args:
    logits_video: (B,) or (B, 1) D logits on video embeddings.
    logits_music: (B,) or (B, 1) D logits on music embeddings.
    mask: optional (B,) validity weights, shared by both sides (a row is one pair).

  Returns:
    The scalar loss (sum of the two means).
  """
  return _bce_const(logits_video, 1.0, mask) + _bce_const(logits_music, 0.0, mask)


def generator_adversarial_loss(
  logits_video: Array, logits_music: Array, *, mode: str = "flip", mask: Array | None = None
) -> Array:
  """Adversarial loss of the generators: make the two modalities indistinguishable to D.

  - `'flip'`: label flipping, `BCE(D(z_video), 0) + BCE(D(z_music), 1)`.
  - `'confusion'`: both sides against the target 0.5, `BCE(D(z_video), 0.5) + BCE(D(z_music), 0.5)`. Its
    minimum is `2 log 2` (at logit 0), not 0: the entropy of the target is not subtracted.
  - `'reversal'`: minus the discriminator's own loss, `-(BCE(D(z_video), 1) + BCE(D(z_music), 0))`: the
    generators ascend what D descends, as a gradient-reversal layer does (ACMR, Wang et al. 2017).

  Args:
    logits_video: (B,) or (B, 1) D logits on video embeddings.
    logits_music: (B,) or (B, 1) D logits on music embeddings.
    mode: `'flip'`, `'confusion'` or `'reversal'`.
    mask: optional (B,) validity weights.

  Returns:
    The scalar loss.

  Raises:
    ValueError: for an unknown mode.
  """
  if mode == "flip":
    return _bce_const(logits_video, 0.0, mask) + _bce_const(logits_music, 1.0, mask)
  if mode == "confusion":
    return _bce_const(logits_video, 0.5, mask) + _bce_const(logits_music, 0.5, mask)
  if mode == "reversal":
    return -discriminator_loss(logits_video, logits_music, mask=mask)
  raise ValueError(f"unknown adversarial mode {mode!r}; expected 'flip', 'confusion' or 'reversal'")


def centroid_gap_loss(z_video: Array, z_music: Array, *, mask: Array | None = None) -> Array:
  """Squared distance between the batch means of the video and of the music embeddings (valid rows only).

  A moment-matching alignment term: it is zero exactly when the two modalities share a centre in the batch,
  which is what the `centroid_gap` of `emvgan_jax.evaluation.alignment` measures on a gallery.
  """
  w = _weights(mask, z_video.shape[0])[:, None]
  total = jnp.maximum(jnp.sum(w), 1.0)
  # Replace masked rows first: 0 * NaN is NaN, and a padding row must not be able to poison the centroids.
  zv, zm = jnp.where(w > 0, _float(z_video), 0.0), jnp.where(w > 0, _float(z_music), 0.0)
  gap = jnp.sum(w * zv, axis=0) / total - jnp.sum(w * zm, axis=0) / total
  return jnp.sum(gap * gap)


def squared_error_loss(predicted: Array, target: Array, *, mask: Array | None = None) -> Array:
  """Squared error of (B, D) predictions, summed over D and averaged over valid rows (the valence-arousal term)."""
  return masked_mean(jnp.sum(jnp.square(_float(predicted) - target), axis=-1), mask)


def r1_penalty(
  disc_apply: Callable[[object, Array], Array], disc_params: object, z: Array, *, mask: Array | None = None
) -> Array:
  """R1 gradient penalty `mean_i ||d D(z_i) / d z_i||^2` on the real (video) embeddings.

  The per-row gradients come from the gradient of `sum_i D(z_i)`, which is exact because D acts on each row
  independently (an MLP, no batch statistics). The usual `gamma / 2` factor is left to the loss weight.

  Args:
    disc_apply: `disc_apply(disc_params, z) -> (B,)` or `(B, 1)` logits.
    disc_params: the discriminator parameters (any pytree).
    z: (B, D) real embeddings; pass them through `stop_gradient` upstream if the generators must not move.
    mask: optional (B,) validity weights.

  Returns:
    The scalar penalty.
  """
  z = _float(z)

  def total_logit(inputs: Array) -> Array:
    return jnp.sum(_rows(disc_apply(disc_params, inputs)))

  grads = jax.grad(total_logit)(z)
  per_row = jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1)
  return masked_mean(per_row, mask)


def binary_accuracy_from_logits(logits_video: Array, logits_music: Array, *, mask: Array | None = None) -> Array:
  """Discriminator accuracy for logging: video counted right when its logit > 0, music when < 0.

  A logit of exactly 0 counts as wrong on both sides (D did not decide).

  Args:
    logits_video: (B,) or (B, 1) D logits on video embeddings.
    logits_music: (B,) or (B, 1) D logits on music embeddings.
    mask: optional (B,) validity weights.

  Returns:
    The scalar share of correct decisions over the 2 * (valid rows) decisions; 0 with no valid row.
  """
  right_video = (_rows(logits_video) > 0).astype(jnp.float32)
  right_music = (_rows(logits_music) < 0).astype(jnp.float32)
  return 0.5 * (masked_mean(right_video, mask) + masked_mean(right_music, mask))
