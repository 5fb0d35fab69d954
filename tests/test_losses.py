"""Tests of emvgan_jax.losses: hand-worked values, masks, a slow reference for InfoNCE, finite gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emvgan_jax import losses

LN2 = math.log(2.0)
LN3 = math.log(3.0)


def _run(fn, *args, **kwargs) -> float:
  """Calls a loss under `jit` and returns a float.

  One XLA compilation per call is much cheaper on CPU than the dozens of per-primitive compilations of an eager
  first call, and it checks that the loss is jittable. Array keyword arguments (masks, labels) are traced;
  the rest (mode, temperature, flags, callables) are closed over as static values.
  """
  arrays = {k: v for k, v in kwargs.items() if isinstance(v, (np.ndarray, jax.Array))}
  static = {k: v for k, v in kwargs.items() if k not in arrays}
  # Positional callables (r1_penalty's disc_apply) cannot be traced either.
  traced = [None if callable(v) else v for v in args]

  def call(a, kw):
    full = [v if callable(v) else t for v, t in zip(args, a)]
    return fn(*full, **kw, **static)

  return float(jax.jit(call)(traced, arrays))


# ------------------------------------------------------------------------------------------------------------
# margin_contrastive_loss

# Rows (video, music, match):
#   0: (1,0) vs (2,0)   cos 1       d 0         y=1 -> d^2 = 0
#   1: (1,0) vs (0,3)   cos 0       d 1         y=1 -> d^2 = 1
#   2: (1,0) vs (1,1)   cos 1/sqrt2 d 0.292893  y=0 -> max(0, 1 - d)^2 = (1/sqrt2)^2 = 0.5
#   3: (1,0) vs (-1,0)  cos -1      d 2         y=0 -> max(0, 1 - 2)^2 = 0
_V = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
_A = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]], np.float32)
_Y = np.array([1, 1, 0, 0])


def test_margin_contrastive_hand_values():
  # mean(0, 1, 0.5, 0) / 2 = 0.375 / 2
  assert _run(losses.margin_contrastive_loss, _V, _A, _Y) == pytest.approx(0.1875, rel=1e-6)
  # Without row 3: (0 + 1 + 0.5) / 3 / 2 = 0.25
  mask = np.array([1, 1, 1, 0])
  assert _run(losses.margin_contrastive_loss, _V, _A, _Y, mask=mask) == pytest.approx(0.25, rel=1e-6)
  # Only row 1: 1 / 2
  mask = np.array([False, True, False, False])
  assert _run(losses.margin_contrastive_loss, _V, _A, _Y, mask=mask) == pytest.approx(0.5, rel=1e-6)
  # margin 2: row 2 -> (2 - (1 - 1/sqrt2))^2 = (1 + 1/sqrt2)^2 = 2.914214; row 3 -> max(0, 2 - 2)^2 = 0
  expected = (0 + 1 + (1 + 1 / math.sqrt(2)) ** 2 + 0) / 4 / 2
  got = _run(losses.margin_contrastive_loss, _V, _A, _Y, margin=2.0)
  assert got == pytest.approx(expected, rel=1e-6)


def test_margin_contrastive_all_masked_and_zero_rows():
  zero = np.zeros_like(_V)
  assert _run(losses.margin_contrastive_loss, _V, _A, _Y, mask=np.zeros(4)) == 0.0
  # Padded rows are zero vectors: the cosine must stay finite there (value and gradient).
  v = np.concatenate([_V, zero])
  a = np.concatenate([_A, zero])
  y = np.concatenate([_Y, np.zeros(4, int)])
  mask = np.r_[np.ones(4), np.zeros(4)]
  assert _run(losses.margin_contrastive_loss, v, a, y, mask=mask) == pytest.approx(0.1875, rel=1e-6)
  g = jax.jit(jax.grad(lambda v_: losses.margin_contrastive_loss(v_, a, y, mask=mask)))(jnp.asarray(v))
  assert np.isfinite(np.asarray(g)).all()


# ------------------------------------------------------------------------------------------------------------
# info_nce_loss


def _info_nce_reference(zv, zm, temperature, mask, ev, em, emotion_positives):
  """Slow explicit loop, float64: the documented supervised-contrastive (mean outside the log) form."""
  zv = np.asarray(zv, np.float64)
  zm = np.asarray(zm, np.float64)
  b = len(zv)
  mask = np.ones(b) if mask is None else np.asarray(mask, np.float64)
  valid = [i for i in range(b) if mask[i] > 0]
  s = zv @ zm.T / temperature

  def one_direction(scores, anchor_labels, cand_labels):
    total, weight = 0.0, 0.0
    for i in valid:
      row = [scores[i, j] for j in valid]
      lse = max(row) + math.log(sum(math.exp(x - max(row)) for x in row))
      pos = [j for j in valid if j == i or (emotion_positives and cand_labels[j] == anchor_labels[i])]
      li = -sum(scores[i, j] - lse for j in pos) / len(pos)
      total += mask[i] * li
      weight += mask[i]
    return total / weight if weight > 0 else 0.0

  return 0.5 * (one_direction(s, ev, em) + one_direction(s.T, em, ev))


def test_info_nce_hand_values():
  eye2 = np.eye(2, dtype=np.float32)
  # logits = I / T. T=1: each anchor -log(e / (e + 1)) = log(1 + e) - 1, both directions alike.
  got = _run(losses.info_nce_loss, eye2, eye2, temperature=1.0)
  assert got == pytest.approx(math.log(1 + math.e) - 1, rel=1e-6)
  # T=0.5: logits 2I -> log(1 + e^2) - 2
  got = _run(losses.info_nce_loss, eye2, eye2, temperature=0.5)
  assert got == pytest.approx(math.log(1 + math.e**2) - 2, rel=1e-6)


def test_info_nce_emotion_positives_hand_value():
  # z = I3, T = 1, emotions (both sides) [0, 0, 1]. v->m anchor 0: logits [1, 0, 0], lse = log(e + 2),
  # positives {0, 1}: -(1/2)[(1 - lse) + (0 - lse)] = lse - 1/2; anchor 1 alike; anchor 2 (alone): lse - 1.
  # Mean: lse - 2/3; m->v is the same by symmetry.
  eye3 = np.eye(3, dtype=np.float32)
  emo = np.array([0, 0, 1])
  got = _run(
    losses.info_nce_loss, eye3, eye3, temperature=1.0, video_emotion=emo, music_emotion=emo, emotion_positives=True
  )
  assert got == pytest.approx(math.log(math.e + 2) - 2 / 3, rel=1e-6)
  # The labels are ignored without emotion_positives: then it is plain InfoNCE, log(e + 2) - 1.
  got = _run(losses.info_nce_loss, eye3, eye3, temperature=1.0, video_emotion=emo, music_emotion=emo)
  assert got == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)


@pytest.mark.parametrize("emotion_positives", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_info_nce_against_reference(emotion_positives, use_mask):
  rng = np.random.default_rng(3 + 2 * emotion_positives + use_mask)
  b, d = 12, 6
  zv = rng.normal(size=(b, d)).astype(np.float32)
  zm = rng.normal(size=(b, d)).astype(np.float32)
  zv /= np.linalg.norm(zv, axis=1, keepdims=True)
  zm /= np.linalg.norm(zm, axis=1, keepdims=True)
  # Independent labels per side, so some diagonal pairs disagree (the diagonal must stay a positive).
  ev = rng.integers(0, 3, b)
  em = rng.integers(0, 3, b)
  mask = (rng.random(b) < 0.7).astype(np.float32) if use_mask else None
  got = _run(
    losses.info_nce_loss,
    zv,
    zm,
    temperature=0.2,
    mask=mask,
    video_emotion=ev,
    music_emotion=em,
    emotion_positives=emotion_positives,
  )
  want = _info_nce_reference(zv, zm, 0.2, mask, ev, em, emotion_positives)
  assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_info_nce_masked_rows_change_nothing():
  rng = np.random.default_rng(0)
  zv = rng.normal(size=(5, 4)).astype(np.float32)
  zm = rng.normal(size=(5, 4)).astype(np.float32)
  ev = rng.integers(0, 2, 5)
  em = rng.integers(0, 2, 5)
  kwargs = dict(temperature=0.3, emotion_positives=True)
  base = _run(losses.info_nce_loss, zv, zm, video_emotion=ev, music_emotion=em, **kwargs)
  # Two extra rows: one a copy of row 0's music (a very attractive candidate), one all zeros; both masked.
  zv2 = np.concatenate([zv, 10 * zv[:1], np.zeros((1, 4), np.float32)])
  zm2 = np.concatenate([zm, 10 * zv[:1], np.zeros((1, 4), np.float32)])
  ev2 = np.r_[ev, ev[0], -1]
  em2 = np.r_[em, ev[0], -1]
  mask = np.r_[np.ones(5), 0, 0]
  padded = _run(losses.info_nce_loss, zv2, zm2, mask=mask, video_emotion=ev2, music_emotion=em2, **kwargs)
  assert padded == pytest.approx(base, rel=1e-6)


def test_info_nce_all_masked_is_zero_with_finite_gradients():
  zv = jnp.ones((4, 3))
  zm = jnp.ones((4, 3))
  emo = jnp.zeros(4, int)
  mask = jnp.zeros(4)

  def f(zv_, zm_, t):
    return losses.info_nce_loss(
      zv_, zm_, temperature=t, mask=mask, video_emotion=emo, music_emotion=emo, emotion_positives=True
    )

  assert float(jax.jit(f)(zv, zm, 0.1)) == 0.0
  grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(zv, zm, 0.1)
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
    assert np.all(np.asarray(g) == 0)


def test_info_nce_traced_temperature_and_gradients():
  rng = np.random.default_rng(1)
  zv = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  zm = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  mask = jnp.asarray([1, 1, 1, 0, 1, 0], jnp.float32)

  @jax.jit
  def f(log_t, zv_, zm_):
    return losses.info_nce_loss(zv_, zm_, temperature=jnp.exp(log_t), mask=mask)

  value = f(jnp.log(0.1), zv, zm)
  want = _info_nce_reference(zv, zm, 0.1, np.asarray(mask), None, None, False)
  assert float(value) == pytest.approx(want, rel=1e-5)
  grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(jnp.log(0.1), zv, zm)
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  # Masked rows get no gradient at all.
  assert np.all(np.asarray(grads[1])[[3, 5]] == 0)


def test_info_nce_needs_labels_for_emotion_positives():
  with pytest.raises(ValueError):
    losses.info_nce_loss(np.eye(2), np.eye(2), temperature=1.0, emotion_positives=True)


# ------------------------------------------------------------------------------------------------------------
# Adversarial losses

# Logits 0 and ln3: sigmoid(0) = 1/2, sigmoid(ln3) = 3/4, sigmoid(-ln3) = 1/4.
_LV = np.array([0.0, LN3], np.float32)
_LM = np.array([0.0, -LN3], np.float32)


def test_discriminator_loss_hand_value():
  # Video vs 1: [-log 1/2, -log 3/4] = [ln2, ln(4/3)]; music vs 0: [-log 1/2, -log(1 - 1/4)] = same.
  # Sum of the two means: ln2 + ln(4/3) = ln(8/3)
  assert _run(losses.discriminator_loss, _LV, _LM) == pytest.approx(math.log(8 / 3), rel=1e-6)
  # (B, 1) logits, as a Dense(1) head returns them, give the same.
  got = _run(losses.discriminator_loss, _LV[:, None], _LM[:, None])
  assert got == pytest.approx(math.log(8 / 3), rel=1e-6)
  # Mask row 1: ln2 + ln2.
  got = _run(losses.discriminator_loss, _LV, _LM, mask=np.array([True, False]))
  assert got == pytest.approx(2 * LN2, rel=1e-6)


def test_generator_adversarial_loss_hand_values():
  # flip: video vs 0: [ln2, -log(1/4) = ln4]; music vs 1: [ln2, -log(1/4)]: 2 * (ln2 + 2 ln2) / 2 = 3 ln2
  assert _run(losses.generator_adversarial_loss, _LV, _LM) == pytest.approx(3 * LN2, rel=1e-6)
  assert _run(losses.generator_adversarial_loss, _LV, _LM, mode="flip") == pytest.approx(3 * LN2, rel=1e-6)
  # confusion: BCE(x, 1/2) = -(log s + log(1 - s)) / 2. x = 0: ln2. x = +-ln3: (ln(4/3) + ln4) / 2 = ln(16/3) / 2.
  # Both sides have mean (ln2 + ln(16/3) / 2) / 2; their sum is ln2 + ln(16/3) / 2.
  want = LN2 + 0.5 * math.log(16 / 3)
  assert _run(losses.generator_adversarial_loss, _LV, _LM, mode="confusion") == pytest.approx(want, rel=1e-6)
  # Its minimum, at logits 0, is 2 ln2.
  zeros = np.zeros(3, np.float32)
  assert _run(losses.generator_adversarial_loss, zeros, zeros, mode="confusion") == pytest.approx(2 * LN2)
  with pytest.raises(ValueError):
    losses.generator_adversarial_loss(_LV, _LM, mode="wasserstein")


def test_adversarial_losses_stable_for_large_logits():
  big = np.array([100.0, -100.0, 80.0], np.float32)
  for fn in (losses.discriminator_loss, losses.generator_adversarial_loss):
    assert np.isfinite(_run(fn, big, -big))
    g = jax.jit(jax.grad(lambda x, fn=fn: fn(x, -x)))(jnp.asarray(big))
    assert np.isfinite(np.asarray(g)).all()
  # A confident, correct D: about 0 (log1p(exp(-100)) underflows to 0 in float32, not to -inf or NaN).
  assert _run(losses.discriminator_loss, np.full(2, 100.0), np.full(2, -100.0)) == pytest.approx(0.0, abs=1e-6)
  # The flipped targets on the same logits: 2 * 100.
  got = _run(losses.generator_adversarial_loss, np.full(2, 100.0), np.full(2, -100.0))
  assert got == pytest.approx(200.0, rel=1e-6)


def test_binary_accuracy_from_logits():
  lv = np.array([1.0, -1.0, 0.0])  # right: >0 -> [1, 0, 0] (0 is undecided, counted wrong)
  lm = np.array([-1.0, -1.0, 2.0])  # right: <0 -> [1, 1, 0]
  assert _run(losses.binary_accuracy_from_logits, lv, lm) == pytest.approx(3 / 6)
  # Only rows 0, 1: (1 + 0 + 1 + 1) / 4
  got = _run(losses.binary_accuracy_from_logits, lv, lm, mask=np.array([1, 1, 0]))
  assert got == pytest.approx(0.75)
  assert _run(losses.binary_accuracy_from_logits, lv, lm, mask=np.zeros(3)) == 0.0


def test_r1_penalty_hand_values():
  # Linear D(z) = z . w + b: dD/dz = w for every row, so the penalty is ||w||^2 = 3^2 + 4^2 = 25.
  def linear(params, z):
    return z @ params["w"] + params["b"]

  params = {"w": jnp.array([3.0, 4.0]), "b": jnp.array(0.5)}
  z = jnp.array([[1.0, 2.0], [-1.0, 0.0], [0.0, 0.0]])
  assert _run(losses.r1_penalty, linear, params, z) == pytest.approx(25.0)

  # Quadratic D(z) = c/2 ||z||^2 (as (B, 1)): dD/dz = c z, so ||.||^2 = c^2 ||z||^2.
  # c = 2, rows (1,0) and (1,1): 4 * [1, 2] -> mean 6; masking row 1 leaves 4.
  def quadratic(c, z):
    return (0.5 * c * jnp.sum(z**2, axis=-1))[:, None]

  z = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  assert _run(losses.r1_penalty, quadratic, 2.0, z) == pytest.approx(6.0)
  assert _run(losses.r1_penalty, quadratic, 2.0, z, mask=jnp.array([1.0, 0.0])) == pytest.approx(4.0)
  assert _run(losses.r1_penalty, quadratic, 2.0, z, mask=jnp.zeros(2)) == 0.0
  # Differentiable in the discriminator parameters: d/dc mean(c^2 ||z||^2) = 2c * 1.5 = 6 at c = 2.
  assert float(jax.jit(jax.grad(lambda c: losses.r1_penalty(quadratic, c, z)))(2.0)) == pytest.approx(6.0)


# ------------------------------------------------------------------------------------------------------------
# Cross-entropies


def test_softmax_cross_entropy_hand_values():
  logits = np.array([[0.0, 0.0], [LN3, 0.0], [5.0, -5.0]], np.float32)
  # Row 0 label 0: -log(1/2) = ln2. Row 1 label 0: -log(3/4) = ln(4/3). Row 2 has a placeholder label -1.
  labels = np.array([0, 0, -1])
  mask = np.array([1, 1, 0])
  got = _run(losses.softmax_cross_entropy, logits, labels, mask=mask)
  assert got == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)
  # Label 1 on row 1: -log(1/4) = ln4.
  got = _run(losses.softmax_cross_entropy, logits[:2], np.array([1, 1]))
  assert got == pytest.approx((LN2 + 2 * LN2) / 2, rel=1e-6)
  assert _run(losses.softmax_cross_entropy, logits, labels, mask=np.zeros(3)) == 0.0


def test_sigmoid_binary_cross_entropy_hand_values():
  # [BCE(0, 1), BCE(ln3, 0)] = [ln2, -log(1/4)] -> mean 1.5 ln2
  got = _run(losses.sigmoid_binary_cross_entropy, np.array([0.0, LN3]), np.array([1, 0]))
  assert got == pytest.approx(1.5 * LN2, rel=1e-6)
  got = _run(losses.sigmoid_binary_cross_entropy, np.array([[0.0], [LN3]]), np.array([1, 0]), mask=np.array([0, 1]))
  assert got == pytest.approx(2 * LN2, rel=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Common properties: padded rows change nothing, all-masked gives 0, jit works, gradients finite.


def _all_losses(rng, b):
  """(name, fn(inputs, mask), inputs) for every loss, with random inputs of batch b."""
  d, k = 4, 5
  inputs = {
    "v": rng.normal(size=(b, d)).astype(np.float32),
    "a": rng.normal(size=(b, d)).astype(np.float32),
    "y": rng.integers(0, 2, b),
    "ev": rng.integers(0, k, b),
    "em": rng.integers(0, k, b),
    "lv": rng.normal(size=(b,)).astype(np.float32) * 3,
    "lm": rng.normal(size=(b,)).astype(np.float32) * 3,
    "logits": rng.normal(size=(b, k)).astype(np.float32),
  }
  w_r1 = jnp.asarray(rng.normal(size=(d,)), jnp.float32)
  fns = {
    "margin": lambda x, m: losses.margin_contrastive_loss(x["v"], x["a"], x["y"], mask=m),
    "nce": lambda x, m: losses.info_nce_loss(x["v"], x["a"], temperature=0.5, mask=m),
    "supcon": lambda x, m: losses.info_nce_loss(
      x["v"], x["a"], temperature=0.5, mask=m, video_emotion=x["ev"], music_emotion=x["em"], emotion_positives=True
    ),
    "disc": lambda x, m: losses.discriminator_loss(x["lv"], x["lm"], mask=m),
    "flip": lambda x, m: losses.generator_adversarial_loss(x["lv"], x["lm"], mask=m),
    "confusion": lambda x, m: losses.generator_adversarial_loss(x["lv"], x["lm"], mode="confusion", mask=m),
    "ce": lambda x, m: losses.softmax_cross_entropy(x["logits"], x["ev"], mask=m),
    "bce": lambda x, m: losses.sigmoid_binary_cross_entropy(x["lv"], x["y"], mask=m),
    "acc": lambda x, m: losses.binary_accuracy_from_logits(x["lv"], x["lm"], mask=m),
    "r1": lambda x, m: losses.r1_penalty(lambda p, z: jnp.tanh(z @ p), w_r1, x["v"], mask=m),
  }
  return fns, inputs


def _evaluate_all(fns, x, masks):
  """Every loss under every mask, in one jitted call (one compilation instead of many eager dispatches)."""

  @jax.jit
  def run(x_, masks_):
    # vmap over the stacked masks: one graph per loss, however many masks.
    return {name: jax.vmap(lambda m, fn=fn: fn(x_, m))(masks_) for name, fn in fns.items()}

  return {name: [float(v) for v in values] for name, values in run(x, np.stack(masks)).items()}


@pytest.mark.slow
def test_padding_changes_nothing_and_all_masked_is_zero():
  rng = np.random.default_rng(7)
  b, pad = 6, 3
  fns, x = _all_losses(rng, b + pad)
  # The last `pad` rows are padding: zero embeddings and logits, placeholder labels.
  for key in ("v", "a", "lv", "lm", "logits"):
    x[key][b:] = 0
  for key in ("ev", "em"):
    x[key][b:] = -1
  x_small = {key: value[:b] for key, value in x.items()}
  masks = [np.r_[np.ones(b), np.zeros(pad)], np.zeros(b + pad), np.r_[np.full(b, 2.0), np.zeros(pad)]]
  padded = _evaluate_all(fns, x, masks)
  small = _evaluate_all(fns, x_small, [np.ones(b)])
  for name in fns:
    assert padded[name][0] == pytest.approx(small[name][0], rel=1e-5, abs=1e-6), name
    assert padded[name][1] == 0.0, name
    # Uniform weights are a weighted mean: scaling them changes nothing.
    assert padded[name][2] == pytest.approx(small[name][0], rel=1e-5, abs=1e-6), name
  # A boolean mask is accepted as well.
  got = _run(losses.margin_contrastive_loss, x["v"], x["a"], x["y"], mask=masks[0] > 0)
  assert got == pytest.approx(small["margin"][0], rel=1e-5)


@pytest.mark.slow
def test_gradients_finite():
  rng = np.random.default_rng(8)
  fns, x = _all_losses(rng, 5)
  x["v"][4] = 0  # a zero embedding row, as in padding
  x["a"][4] = 0
  diff_keys = ("v", "a", "lv", "lm", "logits")
  masks = [np.ones(5), np.array([1, 1, 0, 1, 0.0]), np.zeros(5)]
  floats = {k: jnp.asarray(x[k]) for k in diff_keys}
  others = {k: v for k, v in x.items() if k not in diff_keys}

  @jax.jit
  def all_grads(floats_, masks_):
    out = {}
    for name, fn in fns.items():
      if name == "acc":  # a step function: its gradient is 0 where defined, nothing to check
        continue
      grad_fn = jax.grad(lambda f, m, fn=fn: fn({**others, **f}, m))
      out[name] = jax.vmap(grad_fn, in_axes=(None, 0))(floats_, masks_)
    return out

  for name, grads in all_grads(floats, np.stack(masks)).items():
    for key, g in grads.items():
      g = np.asarray(g)  # (num_masks, ...)
      assert np.isfinite(g).all(), (name, key)
      assert np.all(g[2] == 0), (name, key)  # all rows masked: nothing to learn from
