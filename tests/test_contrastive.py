"""The blockwise, sharded InfoNCE (emvgan_jax/contrastive.py) against the dense reference loss.

The dense `losses.info_nce_loss` is itself checked against a NumPy implementation in test_losses.py. Here the
blockwise loss must give the same value and the same gradients (embeddings and a traced temperature) for every
block size, with padding rows, emotion positives on and off, and on 8 devices, where its compiled program must
move no logits between devices (no all-to-all) and sum the embeddings' gradient with a reduce-scatter.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from emvgan_jax import contrastive, losses
from emvgan_jax.runtime import sharding

K = 5


def _inputs(b: int, d: int = 8, seed: int = 0, masked: float = 0.3) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  mask = rng.random(b) >= masked
  ev = np.where(mask, rng.integers(0, K, b), -1)  # masked rows carry the -1 placeholder label
  em = np.where(mask, rng.integers(0, K, b), -1)
  return {
    "zv": jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
    "zm": jnp.asarray(rng.normal(size=(b, d)), jnp.float32),
    "mask": jnp.asarray(mask),
    "ev": jnp.asarray(ev, jnp.int32),
    "em": jnp.asarray(em, jnp.int32),
  }


def _loss(impl: str, positives: bool, block_rows: int = 4):
  def f(zv, zm, log_t, mask, ev, em):
    kw = dict(temperature=jnp.exp(log_t), mask=mask, video_emotion=ev, music_emotion=em, emotion_positives=positives)
    if impl == "dense":
      return losses.info_nce_loss(zv, zm, **kw)
    return contrastive.info_nce_loss(zv, zm, num_emotions=K, block_rows=block_rows, **kw)

  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


LOG_T = float(np.log(0.3))


def _call(fn, x, log_t=LOG_T):
  return fn(x["zv"], x["zm"], jnp.float32(log_t), x["mask"], x["ev"], x["em"])


def _assert_same(got, want, atol=2e-6):
  (v1, g1), (v2, g2) = got, want
  assert float(v1) == pytest.approx(float(v2), rel=1e-6)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("positives", [False, True])
@pytest.mark.parametrize("block_rows", [1, 3, 64])  # 3 and 64 do not divide the 30 rows: padding, one block
def test_blockwise_equals_dense_value_and_gradients(positives, block_rows):
  x = _inputs(30)
  _assert_same(_call(_loss("blockwise", positives, block_rows), x), _call(_loss("dense", positives), x))


def test_blockwise_equals_an_independent_float64_computation():
  x = _inputs(12, seed=3)
  zv, zm = np.asarray(x["zv"], np.float64), np.asarray(x["zm"], np.float64)
  valid, ev, em = np.asarray(x["mask"]), np.asarray(x["ev"]), np.asarray(x["em"])
  s = zv @ zm.T / 0.3
  total = 0.0
  for scores, anchors, candidates in ((s, ev, em), (s.T, em, ev)):
    for i in np.flatnonzero(valid):
      cand = valid.copy()
      log_p = scores[i] - np.log(np.sum(np.exp(scores[i][cand])))
      pos = cand & (candidates == anchors[i])
      pos[i] = True
      total += -np.mean(log_p[pos]) / valid.sum() / 2
  value, _ = _call(_loss("blockwise", True, block_rows=5), x)
  assert float(value) == pytest.approx(total, rel=1e-5)


@pytest.mark.slow
def test_masked_rows_change_nothing_and_get_no_gradient():
  x = _inputs(16, seed=1)
  poisoned = dict(x, zv=x["zv"].at[~x["mask"]].set(jnp.nan), zm=x["zm"].at[~x["mask"]].set(1e30))
  value, grads = _call(_loss("blockwise", True), poisoned)
  want, _ = _call(_loss("blockwise", True), x)
  assert float(value) == pytest.approx(float(want), rel=1e-6)
  for g in grads[:2]:
    assert np.all(np.asarray(g)[~np.asarray(x["mask"])] == 0)


def test_nothing_valid_gives_zero_and_zero_gradients():
  x = dict(_inputs(8), mask=jnp.zeros(8, bool))
  value, grads = _call(_loss("blockwise", True), x)
  assert float(value) == 0.0
  for g in grads:
    assert np.isfinite(np.asarray(g)).all() and np.all(np.asarray(g) == 0)


def test_large_logits_stay_finite():
  x = _inputs(16, seed=2)
  x = dict(x, zv=x["zv"] * 30.0)  # logits of several hundred: a plain exp would overflow
  got = _call(_loss("blockwise", True), x, log_t=np.log(0.01))
  want = _call(_loss("dense", True), x, log_t=np.log(0.01))
  assert np.isfinite(float(got[0]))
  _assert_same(got, want, atol=1e-3)


@pytest.mark.parametrize("positives", [False, True])
def test_the_one_exponential_path_equals_the_exact_path(positives, monkeypatch):
  x = _inputs(30, seed=6)
  # Unit-norm embeddings, as the generators make: every logit lies within 2 / T of the bound 1 / T.
  x = dict(x, zv=x["zv"] / jnp.linalg.norm(x["zv"], axis=1, keepdims=True))
  x = dict(x, zm=x["zm"] / jnp.linalg.norm(x["zm"], axis=1, keepdims=True))
  results = []
  for threshold in (0.0, contrastive._MIN_SHIFTED_SUM, float("inf")):  # forced shared, the default, forced exact
    monkeypatch.setattr(contrastive, "_MIN_SHIFTED_SUM", threshold)
    results.append(_call(_loss("blockwise", positives, block_rows=8), x))
  _assert_same(results[0], results[2])
  _assert_same(results[1], results[2])
  _assert_same(results[1], _call(_loss("dense", positives), x))


def test_logits_far_below_the_bound_take_the_exact_path(monkeypatch):
  # Row 0's logits are -100, 100 below the bound |a_0| |b_j| = 100: exp(S - c) = exp(-200) is 0 in float32.
  a = jnp.asarray([[100.0, 0.0], [0.0, 1.0]])
  b = jnp.asarray([[-1.0, 0.0], [-1.0, 0.0]])
  valid = jnp.ones(2)
  s = np.asarray(a, np.float64) @ np.asarray(b, np.float64).T
  want_rows, want_cols = np.log(np.exp(s).sum(1)), np.log(np.exp(s).sum(0))
  rows, cols = jax.jit(lambda a_, b_: contrastive.logsumexps(a_, b_, valid))(a, b)
  np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(cols), want_cols, rtol=1e-6)
  monkeypatch.setattr(contrastive, "_MIN_SHIFTED_SUM", 0.0)  # forced onto the shared path, it would be wrong
  rows, _ = jax.jit(lambda a_, b_: contrastive.logsumexps(a_, b_, valid))(a, b)
  assert abs(float(rows[0]) - want_rows[0]) > 50


def test_emotion_positives_need_the_number_of_classes():
  with pytest.raises(ValueError, match="num_emotions"):
    contrastive.info_nce_loss(np.eye(2), np.eye(2), temperature=1.0, emotion_positives=True)
  with pytest.raises(ValueError, match="block_rows"):
    contrastive.logsumexps(jnp.eye(2), jnp.eye(2), jnp.ones(2), block_rows=0)


def _sharded(fn, mesh):
  def run(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  batch, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  return jax.jit(run, in_shardings=(batch, batch, rep, batch, batch, batch))


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.0, float("inf")])  # forced onto the shared path; onto the exact one
@pytest.mark.parametrize("positives", [False, True])
def test_sharded_over_8_devices_equals_one_device_and_moves_no_logits(positives, threshold, monkeypatch):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  x = _inputs(64, seed=4)
  x = dict(x, zv=x["zv"] / jnp.linalg.norm(x["zv"], axis=1, keepdims=True))  # unit norm: the shared path is exact
  x = dict(x, zm=x["zm"] / jnp.linalg.norm(x["zm"], axis=1, keepdims=True))
  monkeypatch.setattr(contrastive, "_MIN_SHIFTED_SUM", threshold)

  def f(zv, zm, log_t, mask, ev, em):
    return contrastive.info_nce_loss(
      zv,
      zm,
      temperature=jnp.exp(log_t),
      mask=mask,
      video_emotion=ev,
      music_emotion=em,
      emotion_positives=positives,
      num_emotions=K,
      block_rows=3,
    )

  step = _sharded(jax.value_and_grad(f, argnums=(0, 1, 2)), mesh)
  args = (x["zv"], x["zm"], jnp.float32(np.log(0.3)), x["mask"], x["ev"], x["em"])
  placed = [jax.device_put(a, s) for a, s in zip(args, step.lower(*args).compile().input_shardings[0])]
  hlo = step.lower(*placed).compile().as_text()
  assert "all-to-all(" not in hlo
  assert "reduce-scatter(" in hlo  # the music embeddings' gradient arrives as each device's shard
  got = step(*placed)
  assert got[1][0].sharding.spec == P(sharding.DATA_AXIS)  # each device kept its rows of the gradient
  _assert_same(got, _call(_loss("dense", positives), x))


def test_logsumexps_of_each_device_are_its_rows_of_the_full_matrix():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=(32, 4)).astype(np.float32)
  valid = rng.random(32) > 0.2
  row = NamedSharding(mesh, P(sharding.DATA_AXIS))
  rows, cols = jax.jit(lambda a_, b_, v_: contrastive.logsumexps(a_, b_, v_, block_rows=2, mesh=mesh))(
    jax.device_put(a, row), jax.device_put(b, row), jax.device_put(valid, row)
  )
  s = a.astype(np.float64) @ b.T.astype(np.float64)
  want_rows = np.where(valid, np.log(np.exp(s[:, valid]).sum(1)), 0.0)  # 0 for an invalid row or column
  want_cols = np.where(valid, np.log(np.exp(s[valid, :]).sum(0)), 0.0)
  np.testing.assert_allclose(np.asarray(rows), want_rows, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(cols), want_cols, rtol=1e-5)


def _emvgan_step(config, n_devices: int = 8, *, all_valid: bool = True):
  """(state, compiled step, a fixed global batch of 64 rows of widths 12 and 6) of `config` on `n_devices`."""
  from emvgan_jax import families, train  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh({"data": n_devices}, jax.devices()[:n_devices])
  family = families.build(config)
  state, abstract = train.create_state(family, config, mesh, 12, 6)
  step = train.compile_train_step(family, mesh, sharding.shardings_of(abstract))
  rng = np.random.default_rng(0)
  b = 64
  batch = {
    "video": rng.normal(size=(b, 12)).astype(np.float32),
    "music": rng.normal(size=(b, 6)).astype(np.float32),
    "match": rng.integers(0, 2, b).astype(np.int32),
    "video_emotion": rng.integers(0, K, b).astype(np.int32),
    "music_emotion": rng.integers(0, K, b).astype(np.int32),
  }
  batch["mask"] = np.ones(b, bool) if all_valid else rng.random(b) > 0.1
  return state, step, {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}


def _config(**fields):
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  config = config_lib.load_config_file("configs/emomv_c.py")
  config.unlock()
  # EmoMV-C's EMVGAN at a tenth of its widths: the same program, a smaller one to compile and run.
  for key, value in {"emvgan.hidden": 32, "emvgan.embed_dim": 16, "emvgan.disc_hidden": 32, **fields}.items():
    config_lib.set_field(config, key, value)
  return config


def _step_hlo(impl: str, contrastive_loss: str = "softmax") -> str:
  overrides = {"loss.nce_impl": impl, "loss.learn_temperature": True, "loss.contrastive": contrastive_loss}
  state, step, batch = _emvgan_step(_config(**overrides))
  return step.lower(state, batch, jax.random.key(0)).compile().as_text()


@pytest.mark.slow  # compiles EMVGAN train steps
def test_the_compiled_emvgan_step_on_8_devices_has_no_all_to_all():
  assert "all-to-all(" not in _step_hlo("blockwise")
  assert "all-to-all(" not in _step_hlo("blockwise", "sigmoid")
  # The dense loss transposes the sharded logits: the same check finds its all-to-alls.
  assert "all-to-all(" in _step_hlo("dense")


@functools.cache  # the references are shared by the tests that compare with them
def _emvgan_steps(*, accum: int = 1, dtype: str = "float32", clean: bool = False, n_devices: int = 8, steps: int = 1):
  """`steps` EMVGAN steps on one fixed batch of 64 rows (dropout off, so microbatches draw no masks of their own)."""
  config = _config(
    **{
      "train.accumulation_steps": accum,
      "emvgan.compute_dtype": dtype,
      "emvgan.dropout_rate": 0.0,
      "loss.learn_temperature": True,
      "loss.adv_inputs": "clean" if clean else "train",
    }
  )
  state, step, batch = _emvgan_step(config, n_devices, all_valid=False)
  metrics = {}
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(0))
  params = jax.tree.map(np.asarray, state.params)
  return params, {k: float(v) for k, v in metrics.items()}


def _update_cosine(a, b, start) -> float:
  """Cosine between the parameter updates `a - start` and `b - start`, over every leaf.

  Parameters are not compared one by one: Adam's first step moves each by about the learning rate whatever the
  size of its gradient, so a gradient component at rounding level can flip the sign of a whole step.
  """
  da = np.concatenate([np.ravel(x - s) for x, s in zip(jax.tree.leaves(a), jax.tree.leaves(start))])
  db = np.concatenate([np.ravel(x - s) for x, s in zip(jax.tree.leaves(b), jax.tree.leaves(start))])
  return float(da @ db / np.linalg.norm(da) / np.linalg.norm(db))


@pytest.mark.slow  # compiles EMVGAN train steps
@pytest.mark.parametrize(("accum", "clean", "n_devices"), [(4, False, 8), (2, True, 8), (8, False, 1)])
def test_accumulated_gradients_equal_one_big_batch(accum, clean, n_devices):
  want_params, want = _emvgan_steps(clean=clean)
  got_params, got = _emvgan_steps(accum=accum, clean=clean, n_devices=n_devices)
  for key in ("loss", "loss_nce", "loss_adv", "loss_disc", "grad_norm"):
    assert got[key] == pytest.approx(want[key], rel=1e-5), key
  start, _ = _emvgan_steps(clean=clean, steps=0)
  assert _update_cosine(got_params, want_params, start) > 0.9999


def _pass_and_pull(generator, accum, clean):
  """The generator pass of `accum` microbatches and its pull-back of `cotangents`, as one jitted function of
  (params, batch, key, cotangents) -> (outputs, gradient)."""
  from emvgan_jax.families import emvgan as emvgan_family

  def run(params, batch, key, cotangents):
    out, adv, pull = emvgan_family._generator_pass(generator, params, batch, key, clean=clean, accum=accum)
    del adv  # pulled back through the cotangents given for it
    return out, pull(cotangents)

  return jax.jit(run)


def _generator_and_batch(dropout_rate, seed):
  from emvgan_jax.models import emvgan as emvgan_model

  generator = emvgan_model.GeneratorSide(hidden=16, embed_dim=8, dropout_rate=dropout_rate)
  rng = np.random.default_rng(seed)
  batch = {"video": jnp.asarray(rng.normal(size=(24, 10)), jnp.float32)}
  batch["music"] = jnp.asarray(rng.normal(size=(24, 6)), jnp.float32)
  init = jax.jit(lambda key: generator.init(key, batch["video"], batch["music"], train=False)["params"])
  return generator, batch, init(jax.random.key(0)), rng


@pytest.mark.slow
@pytest.mark.parametrize("clean", [False, True])
def test_microbatched_pull_back_equals_the_whole_batch_gradient(clean):
  generator, batch, params, _ = _generator_and_batch(0.0, 7)
  shapes = jax.eval_shape(lambda: generator.apply({"params": params}, batch["video"], batch["music"], train=False))
  cot_rng = np.random.default_rng(8)  # the same cotangents for both
  cotangents = jax.tree.map(lambda x: jnp.asarray(cot_rng.normal(size=x.shape), x.dtype), (shapes, shapes))
  grads = {
    accum: _pass_and_pull(generator, accum, clean)(params, batch, jax.random.key(1), cotangents) for accum in (1, 3)
  }
  np.testing.assert_allclose(grads[3][0]["video_embedding"], grads[1][0]["video_embedding"], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads[3][1]), jax.tree.leaves(grads[1][1])):
    # Summed in another order: rounding of about 1e-6 of the leaf's largest entry.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.slow  # compiles EMVGAN train steps
def test_bfloat16_compute_keeps_float32_parameters_and_the_loss_within_a_percent():
  want_params, want = _emvgan_steps()
  got_params, got = _emvgan_steps(dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(got_params)} == {np.dtype(np.float32)}
  for key in ("loss", "loss_nce", "loss_pair", "loss_emo", "loss_disc"):
    assert got[key] == pytest.approx(want[key], rel=1e-2), key
  assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=5e-2)
  start, _ = _emvgan_steps(steps=0)
  assert _update_cosine(got_params, want_params, start) > 0.99


@pytest.mark.slow
def test_microbatches_draw_their_own_dropout_masks_the_same_in_both_passes():
  """With dropout on: pass one's outputs and pass two's gradient are those of microbatch m = rows m::k run with the
  key fold_in(key, m), built here by hand (so a pass two that drew other masks than pass one would fail)."""
  generator, batch, params, rng = _generator_and_batch(0.5, 9)
  key, k = jax.random.key(1), 3
  shapes = jax.eval_shape(lambda: generator.apply({"params": params}, batch["video"], batch["music"], train=False))
  cot = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), shapes)
  out, grads = _pass_and_pull(generator, k, False)(params, batch, key, (cot, jax.tree.map(jnp.zeros_like, cot)))

  def apply(p, m, fold):  # microbatch m with the dropout key of microbatch `fold`
    rngs = {"dropout": jax.random.fold_in(key, fold)}
    return generator.apply({"params": p}, batch["video"][m::k], batch["music"][m::k], train=True, rngs=rngs)

  @jax.jit
  def by_hand(p):
    def total(p):
      outs = {m: apply(p, m, m) for m in range(k)}
      return sum(jnp.sum(cot[name][m::k] * o[name]) for m, o in outs.items() for name in o), outs

    (_, outs), grad = jax.value_and_grad(total, has_aux=True)(p)
    return outs, grad, apply(p, 0, 1)  # and microbatch 0 with microbatch 1's key: other masks

  outs, want, other = by_hand(params)
  for m in range(k):
    np.testing.assert_allclose(out["video_embedding"][m::k], outs[m]["video_embedding"], rtol=1e-6, atol=1e-6)
  # The check can fail: microbatch 0 run with microbatch 1's key (other masks) gives other embeddings.
  assert not np.allclose(out["video_embedding"][0::k], other["video_embedding"], atol=1e-3)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_masked_rows_do_not_force_the_exact_path():
  rng = np.random.default_rng(7)
  e = np.eye(8, dtype=np.float32)[0]
  b = e + 0.1 * rng.standard_normal((64, 8)).astype(np.float32)
  b /= np.linalg.norm(b, axis=1, keepdims=True)
  a = 100 * b[::-1]  # unit embeddings at 1/T = 100, the clip's limit; every valid logit close to 100
  valid = (np.arange(64) % 2).astype(np.float32)
  zeroed = a * valid[:, None]  # masked rows as the loss passes them: zero, so each of their logits is 100 below c
  fast = jax.jit(lambda a_, b_: contrastive._forward(a_, b_, jnp.asarray(valid), 16, None)[2][-1])  # pylint: disable=protected-access
  assert bool(fast(zeroed, b * valid[:, None]))
  far = zeroed.copy()
  far[1] = -far[1]  # a valid row whose logits are all about 200 below the bound: now the exact path
  assert not bool(fast(far, b * valid[:, None]))


def test_one_devices_rows_far_below_the_bound_take_every_device_to_the_exact_path():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(8)
  e = np.eye(4, dtype=np.float32)[0]
  b = e + 0.01 * rng.standard_normal((32, 4)).astype(np.float32)
  a = 30 * (e + 0.01 * rng.standard_normal((32, 4)).astype(np.float32))
  a[2] = -30 * e  # on device 0 only (4 rows a device): its logits are about 60 below the bound
  valid = np.ones(32, bool)
  row = NamedSharding(mesh, P(sharding.DATA_AXIS))
  rows, cols = jax.jit(lambda a_, b_, v_: contrastive.logsumexps(a_, b_, v_, block_rows=2, mesh=mesh))(
    jax.device_put(a, row), jax.device_put(b, row), jax.device_put(valid, row)
  )
  s = a.astype(np.float64) @ b.T.astype(np.float64)
  np.testing.assert_allclose(np.asarray(rows), np.log(np.exp(s).sum(1)), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(cols), np.log(np.exp(s).sum(0)), rtol=1e-6)


# --- the pairwise sigmoid loss (SigLIP) ---------------------------------------------------------------------------


def _sigmoid(impl: str, positives: bool, block_rows: int = 4):
  def f(zv, zm, log_t, bias, mask, ev, em):
    kw = dict(scale=jnp.exp(log_t), bias=bias, mask=mask, video_emotion=ev, music_emotion=em)
    if impl == "dense":
      return losses.sigmoid_contrastive_loss(zv, zm, emotion_positives=positives, **kw)
    return contrastive.sigmoid_contrastive_loss(zv, zm, emotion_positives=positives, block_rows=block_rows, **kw)

  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))


LOG_SCALE = float(np.log(3.0))


def _sigmoid_call(fn, x, log_t=LOG_SCALE, bias=-2.0):
  return fn(x["zv"], x["zm"], jnp.float32(log_t), jnp.float32(bias), x["mask"], x["ev"], x["em"])


def test_the_sigmoid_loss_of_a_hand_worked_batch():
  # Two valid rows and one masked: z_v = (1, 0), (0, 1); z_m = (1, 0), (1, 0); scale 2, bias -1. Cosines
  # [[1, 1], [0, 0]] -> logits [[1, 1], [-1, -1]]. Without emotion positives only (0, 0) and (1, 1) are positive:
  # terms -log s(1), -log s(-1) [(0, 1) negative: -log s(-1)], -log s(1) [(1, 0) negative: -log s(1)], -log s(-1).
  zv = jnp.asarray([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
  zm = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
  mask = jnp.asarray([True, True, False])
  ls = lambda x: float(np.log1p(np.exp(-x)))  # -log sigmoid(x)
  want = (ls(1) + ls(-1) + ls(1) + ls(-1)) / 2
  got = losses.sigmoid_contrastive_loss(zv, zm, scale=2.0, bias=-1.0, mask=mask)
  assert float(got) == pytest.approx(want, rel=1e-6)
  # Emotion positives: video 1 and music 0 share emotion 3, so (1, 0) turns positive: -log s(-1).
  ev, em = jnp.asarray([0, 3, -1]), jnp.asarray([3, 1, -1])
  got = losses.sigmoid_contrastive_loss(
    zv, zm, scale=2.0, bias=-1.0, mask=mask, video_emotion=ev, music_emotion=em, emotion_positives=True
  )
  assert float(got) == pytest.approx((ls(1) + ls(-1) + ls(-1) + ls(-1)) / 2, rel=1e-6)


@pytest.mark.parametrize("positives", [False, True])
@pytest.mark.parametrize("block_rows", [1, 7, 64])
def test_blockwise_sigmoid_equals_dense_value_and_gradients(positives, block_rows):
  x = _inputs(30, seed=5)
  got = _sigmoid_call(_sigmoid("blockwise", positives, block_rows), x)
  (v1, g1), (v2, g2) = got, _sigmoid_call(_sigmoid("dense", positives), x)
  assert float(v1) == pytest.approx(float(v2), rel=1e-6)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("positives", [False, True])
def test_sigmoid_sharded_over_8_devices_equals_dense_and_moves_no_logits(positives):
  assert jax.device_count() == 8
  mesh = sharding.make_mesh()
  x = _inputs(64, seed=6)

  def f(zv, zm, log_t, bias, mask, ev, em):
    kw = dict(scale=jnp.exp(log_t), bias=bias, mask=mask, video_emotion=ev, music_emotion=em)
    return contrastive.sigmoid_contrastive_loss(zv, zm, emotion_positives=positives, block_rows=3, **kw)

  def run(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return jax.value_and_grad(f, argnums=(0, 1, 2, 3))(*args)

  batch, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
  step = jax.jit(run, in_shardings=(batch, batch, rep, rep, batch, batch, batch))
  args = (x["zv"], x["zm"], jnp.float32(np.log(3.0)), jnp.float32(-2.0), x["mask"], x["ev"], x["em"])
  hlo = step.lower(*args).compile().as_text()
  assert "all-to-all(" not in hlo
  assert "reduce-scatter(" in hlo  # the music embeddings' gradient arrives as each device's shard
  (v1, g1), (v2, g2) = step(*args), _sigmoid_call(_sigmoid("dense", positives), x)
  assert float(v1) == pytest.approx(float(v2), rel=1e-6)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=2e-6)
