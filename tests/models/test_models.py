"""Tests for emvgan_jax.models: shapes, parameter counts, init, dropout, CBP and the EMVGAN generator side."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emvgan_jax import models
from emvgan_jax.models import cbp
from emvgan_jax.ops import l2_normalize

# Odd / prime sizes so a transposed or mixed-up axis cannot pass by coincidence.
BATCH, VIDEO_DIM, MUSIC_DIM = 7, 13, 11
VARIANTS = list(itertools.product(("classification", "retrieval"), (False, True)))


# Test data comes from numpy: every new shape drawn with jax.random costs an XLA compile (~0.5 s on CPU).
def _inputs(batch=BATCH, video_dim=VIDEO_DIM, music_dim=MUSIC_DIM, seed=0):
  rng = np.random.default_rng(seed)
  return (
    jnp.asarray(rng.standard_normal((batch, video_dim)), jnp.float32),
    jnp.asarray(rng.standard_normal((batch, music_dim)), jnp.float32),
  )


def _init(model, video, music, seed=0):
  k_params, k_dropout = jax.random.split(jax.random.PRNGKey(seed))
  init = jax.jit(functools.partial(model.init, train=False))  # one program, not one per operation
  return init({"params": k_params, "dropout": k_dropout}, video, music)


@functools.cache
def _jitted_apply(model):
  return jax.jit(model.apply, static_argnames=("train", "method"))


def _apply(model, *args, **kwargs):
  """`model.apply` as one compiled program: run eagerly, each of its operations compiles a program of its own."""
  return _jitted_apply(model)(*args, **kwargs)


# Initialisation compiles a random draw per parameter shape, so each model is initialised once per file.
@functools.cache
def _baseline(task, multitask, seed=0):
  model = models.EmoMVBaseline(task=task, multitask=multitask)
  return model, _init(model, *_inputs(), seed=seed)


@functools.cache
def _emvgan_cached():
  model = models.GeneratorSide(hidden=29, embed_dim=19, num_emotions=5)
  return model, _init(model, *_inputs())


def _assert_unit_norm(x):
  np.testing.assert_allclose(np.linalg.norm(np.asarray(x), axis=-1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# EmoMV baseline


@pytest.mark.slow
@pytest.mark.parametrize("task,multitask", VARIANTS)
def test_baseline_shapes_and_unit_norm(task, multitask):
  model, variables = _baseline(task, multitask)
  video, music = _inputs()
  out = _apply(model, variables, video, music, train=False)

  expected = {"video_embedding": (BATCH, 64), "music_embedding": (BATCH, 64)}
  expected.update({"score": (BATCH,)} if task == "retrieval" else {"match_logits": (BATCH, 2)})
  if multitask:
    expected.update({"video_emotion_logits": (BATCH, 5), "music_emotion_logits": (BATCH, 5)})
  assert {k: v.shape for k, v in out.items()} == expected
  _assert_unit_norm(out["video_embedding"])
  _assert_unit_norm(out["music_embedding"])
  if task == "retrieval":
    cos = jnp.sum(out["video_embedding"] * out["music_embedding"], -1)
    np.testing.assert_allclose(out["score"], cos, rtol=1e-6)
  assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


@pytest.mark.parametrize(
  "task,multitask,expected",
  [
    ("classification", False, 173_538),
    ("classification", True, 174_188),
    ("retrieval", False, 172_672),
    ("retrieval", True, 173_322),
  ],
)
def test_baseline_param_counts_at_emomv_sizes(task, multitask, expected):
  model = models.EmoMVBaseline(task=task, multitask=multitask)
  video, music = jnp.zeros((2, 2304)), jnp.zeros((2, 128))
  shapes = jax.eval_shape(lambda: _init(model, video, music))
  assert models.count_params(shapes["params"]) == expected


def test_cbp_constants_are_a_separate_collection():
  model, variables = _baseline("classification", False)
  assert set(variables) == {"params", "constants"}
  consts = variables["constants"]["cbp"]
  for side in ("x", "y"):
    hashes, signs = np.asarray(consts[f"{side}_hashes"]), np.asarray(consts[f"{side}_signs"])
    assert hashes.shape == signs.shape == (64,)
    assert hashes.min() >= 0 and hashes.max() < 32
    assert set(np.unique(signs)) <= {-1.0, 1.0}
  # Nothing hash-like leaks into the trainable parameters.
  assert "cbp" not in variables["params"]
  # The same seed draws the same sketch; another seed draws another.
  again = _init(model, *_inputs())
  other = _baseline("classification", False, seed=1)[1]
  np.testing.assert_array_equal(again["constants"]["cbp"]["x_hashes"], consts["x_hashes"])
  assert not np.array_equal(other["constants"]["cbp"]["x_hashes"], consts["x_hashes"])


def test_retrieval_has_only_params():
  assert set(_baseline("retrieval", False)[1]) == {"params"}


def test_baseline_rejects_unknown_task():
  with pytest.raises(ValueError, match="task"):
    jax.eval_shape(lambda: _init(models.EmoMVBaseline(task="regression"), *_inputs()))


# Dropout sits in the trunk both tasks share: one variant of each task (and of the multitask heads) covers it.
@pytest.mark.parametrize("task,multitask", [("classification", True), ("retrieval", False)])
def test_baseline_dropout(task, multitask):
  model, variables = _baseline(task, multitask)
  video, music = _inputs()
  key = "score" if task == "retrieval" else "match_logits"

  eval_a = _apply(model, variables, video, music, train=False)
  eval_b = _apply(model, variables, video, music, train=False)
  np.testing.assert_array_equal(eval_a[key], eval_b[key])

  train_a = _apply(model, variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  train_a2 = _apply(model, variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  train_b = _apply(model, variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  np.testing.assert_array_equal(train_a[key], train_a2[key])
  assert not np.allclose(train_a[key], train_b[key])
  assert not np.allclose(train_a[key], eval_a[key])


def test_baseline_torch_init_bounds():
  params = _baseline("classification", True)[1]["params"]
  dense_layers = 0
  for path, kernel in jax.tree_util.tree_leaves_with_path(params):
    names = [p.key for p in path]
    if "layer_norm" in names or names[-1] != "kernel":
      continue
    bias = functools.reduce(lambda tree, name: tree[name], names[:-1], params)["bias"]
    bound = 1.0 / math.sqrt(kernel.shape[0])
    assert np.abs(np.asarray(kernel)).max() <= bound + 1e-7, names
    assert np.abs(np.asarray(bias)).max() <= bound + 1e-7, names
    dense_layers += 1
  # video_fc, music_fc, 2 x 2 head layers, match_fc, match_out, 2 emotion heads.
  assert dense_layers == 10


def test_torch_dense_init_spread():
  # EmoMV's widest layer (2304 -> 64): 147k kernel samples, so the moments of U(-b, b) show clearly.
  params = models.TorchDense(64).init(jax.random.PRNGKey(0), jnp.zeros((1, 2304)))["params"]
  kernel, bias = np.asarray(params["kernel"]), np.asarray(params["bias"])
  bound = 1.0 / math.sqrt(2304)
  assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
  assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
  assert abs(kernel.mean()) < 0.01 * bound
  assert kernel.max() > 0.99 * bound and kernel.min() < -0.99 * bound
  # Biases are uniform too, not zero as in flax's default (64 samples: a loose check).
  assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.3)
  assert jax.tree.map(jnp.shape, params) == {"kernel": (2304, 64), "bias": (64,)}


def test_torch_dense_computes_affine_map():
  layer = models.TorchDense(64)
  x, _ = _inputs(video_dim=2304)
  params = layer.init(jax.random.PRNGKey(0), x)["params"]
  np.testing.assert_allclose(
    _apply(layer, {"params": params}, x), x @ params["kernel"] + params["bias"], rtol=1e-5, atol=1e-5
  )


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "retrieval"])
def test_baseline_jit(task):
  model, variables = _baseline(task, True)
  video, music = _inputs()
  apply = jax.jit(lambda v, x, a, rng: model.apply(v, x, a, train=True, rngs={"dropout": rng}))
  out = apply(variables, video, music, jax.random.PRNGKey(3))
  eager = model.apply(variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
  for key in out:
    np.testing.assert_allclose(out[key], eager[key], rtol=1e-5, atol=1e-6)

  # Gradients reach every parameter (through the CBP's FFTs too) and none of them is NaN.
  def loss(params):
    out = _apply(
      model, {**variables, "params": params}, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(3)}
    )
    return sum(jnp.sum(jnp.square(v)) for v in out.values() if v.ndim == 2)

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.isfinite(np.asarray(grad)).all(), path
    assert np.abs(np.asarray(grad)).max() > 0.0, path


def test_baseline_widths_are_fields():
  model = models.EmoMVBaseline(task="classification", multitask=True, hidden=17, cbp_dim=11, num_emotions=3)
  video, music = _inputs()
  variables = jax.eval_shape(lambda: _init(model, video, music))
  out = jax.eval_shape(lambda v: model.apply(v, video, music, train=False), variables)
  assert out["video_embedding"].shape == (BATCH, 17)
  assert out["match_logits"].shape == (BATCH, 2)
  assert out["music_emotion_logits"].shape == (BATCH, 3)
  assert variables["constants"]["cbp"]["x_hashes"].shape == (17,)
  assert variables["params"]["match_fc"]["kernel"].shape == (11, 11)


# ----------------------------------------------------------------------------------------------------------
# Compact bilinear pooling


def _random_sketch(rng, width, dim):
  return (jnp.asarray(rng.integers(0, dim, width), jnp.int32), jnp.asarray(rng.choice([-1.0, 1.0], width), jnp.float32))


def test_count_sketch_by_hand():
  x = jnp.array([[1.0, 2.0, 3.0, 4.0]])
  hashes = jnp.array([0, 2, 0, 1])
  signs = jnp.array([1.0, -1.0, -1.0, 1.0])
  np.testing.assert_allclose(cbp.count_sketch(x, hashes, signs, 3), [[1.0 - 3.0, 4.0, -2.0]])


def test_cbp_equals_direct_circular_convolution():
  dim, n, m = 32, 64, 64
  rng = np.random.default_rng(0)
  x, y = _inputs(video_dim=n, music_dim=m)
  hx, sx = _random_sketch(rng, n, dim)
  hy, sy = _random_sketch(rng, m, dim)
  got = cbp.compact_bilinear_pooling(x, y, x_hashes=hx, x_signs=sx, y_hashes=hy, y_signs=sy, output_dim=dim)

  # Direct loops in float64: count sketches, then out[k] = sum_j cx[j] cy[(k - j) mod dim].
  x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
  cx = np.zeros((BATCH, dim))
  cy = np.zeros((BATCH, dim))
  for i in range(n):
    cx[:, int(hx[i])] += float(sx[i]) * x64[:, i]
  for i in range(m):
    cy[:, int(hy[i])] += float(sy[i]) * y64[:, i]
  want = np.zeros((BATCH, dim))
  for k in range(dim):
    for j in range(dim):
      want[:, k] += cx[:, j] * cy[:, (k - j) % dim]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_cbp_is_count_sketch_of_outer_product():
  # Tensor Sketch: conv(CS_x(x), CS_y(y)) = CS(x y^T) with hash (h_x[i] + h_y[j]) mod d, sign s_x[i] s_y[j].
  dim, n, m = 7, 5, 3
  rng = np.random.default_rng(4)
  x, y = _inputs(batch=2, video_dim=n, music_dim=m, seed=4)
  hx, sx = _random_sketch(rng, n, dim)
  hy, sy = _random_sketch(rng, m, dim)
  got = cbp.compact_bilinear_pooling(x, y, x_hashes=hx, x_signs=sx, y_hashes=hy, y_signs=sy, output_dim=dim)

  outer = (x[:, :, None] * y[:, None, :]).reshape(2, n * m)
  joint_hashes = ((hx[:, None] + hy[None, :]) % dim).reshape(-1)
  joint_signs = (sx[:, None] * sy[None, :]).reshape(-1)
  want = cbp.count_sketch(outer, joint_hashes, joint_signs, dim)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_cbp_module_uses_its_constants():
  module = cbp.CompactBilinearPooling(output_dim=11)
  x, y = _inputs(video_dim=64, music_dim=64)  # EmoMV's widths: the baseline already compiled these draws.
  variables = module.init(jax.random.PRNGKey(0), x, y)
  assert set(variables) == {"constants"}
  consts = variables["constants"]
  want = cbp.compact_bilinear_pooling(
    x,
    y,
    x_hashes=consts["x_hashes"],
    x_signs=consts["x_signs"],
    y_hashes=consts["y_hashes"],
    y_signs=consts["y_signs"],
    output_dim=11,
  )
  got = _apply(module, variables, x, y)
  assert got.shape == (BATCH, 11)
  np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Shared layers


def test_l2_normalize_zero_vector_is_safe():
  x = jnp.zeros((3, 4))
  np.testing.assert_array_equal(l2_normalize(x), x)
  grad = jax.grad(lambda v: jnp.sum(l2_normalize(v)))(x)
  assert np.isfinite(np.asarray(grad)).all()


def test_gelu_is_tanh_approximation():
  x = jnp.linspace(-3.0, 3.0, 13)
  want = 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x**3)))
  np.testing.assert_allclose(models.gelu(x), want, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# EMVGAN


@pytest.mark.slow
def test_encoder_and_generator_shapes():
  video, _ = _inputs()
  # The same widths as the cached EMVGAN model, so the initialisers' compiled draws are reused.
  encoder = models.Encoder(hidden=29, dropout_rate=0.1)
  enc_vars = encoder.init(jax.random.PRNGKey(0), video, train=False)
  h = _apply(encoder, enc_vars, video, train=False)
  assert h.shape == (BATCH, 29)

  generator = models.Generator(embed_dim=19)
  gen_vars = generator.init(jax.random.PRNGKey(1), h)
  z = _apply(generator, gen_vars, h)
  assert z.shape == (BATCH, 19)
  _assert_unit_norm(z)


def test_discriminator_shapes():
  z = l2_normalize(_inputs(video_dim=19)[0])
  disc = models.ModalityDiscriminator(hidden=29)
  variables = disc.init(jax.random.PRNGKey(1), z)
  assert set(variables) == {"params"}
  shapes = jax.tree.map(jnp.shape, variables["params"])
  assert shapes["dense_0"]["kernel"] == (19, 29)
  assert shapes["dense_1"]["kernel"] == (29, 29)
  assert shapes["logit"]["kernel"] == (29, 1)
  logits = jax.jit(disc.apply)(variables, z)
  assert logits.shape == (BATCH,)
  assert np.isfinite(np.asarray(logits)).all()


def _emvgan():
  return *_emvgan_cached(), *_inputs()


def test_emvgan_shapes_and_unit_norm():
  model, variables, video, music = _emvgan()
  assert set(variables) == {"params"}
  out = _apply(model, variables, video, music, train=False)
  assert {k: v.shape for k, v in out.items()} == {
    "video_embedding": (BATCH, 19),
    "music_embedding": (BATCH, 19),
    "video_emotion_logits": (BATCH, 5),
    "music_emotion_logits": (BATCH, 5),
    "score": (BATCH,),
    "match_logit": (BATCH,),
  }
  _assert_unit_norm(out["video_embedding"])
  _assert_unit_norm(out["music_embedding"])
  cos = jnp.sum(out["video_embedding"] * out["music_embedding"], -1)
  np.testing.assert_allclose(out["score"], cos, rtol=1e-6, atol=1e-7)
  params = variables["params"]
  want_logit = params["match_scale"] * cos + params["match_bias"]
  np.testing.assert_allclose(out["match_logit"], want_logit, rtol=1e-6, atol=1e-6)


def test_emvgan_input_widths_come_from_inputs():
  model = models.GeneratorSide()
  params = jax.eval_shape(lambda: _init(model, jnp.zeros((2, 2304)), jnp.zeros((2, 128))))["params"]
  assert params["video_encoder"]["dense_in"]["kernel"].shape == (2304, 256)
  assert params["music_encoder"]["dense_in"]["kernel"].shape == (128, 256)
  assert params["video_generator"]["projection"]["kernel"].shape == (256, 64)
  assert params["emotion_head"]["kernel"].shape == (64, 5)


def test_emvgan_calibration_init():
  params = _emvgan_cached()[1]["params"]
  assert params["match_scale"].shape == () and float(params["match_scale"]) == 5.0
  assert params["match_bias"].shape == () and float(params["match_bias"]) == 0.0


def test_emvgan_emotion_head_is_shared():
  model, variables, video, music = _emvgan()
  params = variables["params"]
  # Exactly one layer with K outputs in the whole tree: the shared head.
  k_kernels = [
    path
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if path[-1].key == "kernel" and leaf.shape[-1] == 5
  ]
  assert len(k_kernels) == 1
  assert jax.tree.map(jnp.shape, params["emotion_head"]) == {"kernel": (19, 5), "bias": (5,)}
  out = _apply(model, variables, video, music, train=False)
  head = params["emotion_head"]
  for side in ("video", "music"):
    want = out[f"{side}_embedding"] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(out[f"{side}_emotion_logits"], want, rtol=1e-5, atol=1e-6)


def test_emvgan_embed_methods_match_call():
  model, variables, video, music = _emvgan()
  out = _apply(model, variables, video, music, train=False)
  z_video = _apply(model, variables, video, train=False, method="embed_video")
  z_music = _apply(model, variables, music, train=False, method=models.GeneratorSide.embed_music)
  np.testing.assert_allclose(z_video, out["video_embedding"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(z_music, out["music_embedding"], rtol=1e-6, atol=1e-7)
  # A gallery is embedded one modality at a time, with any batch size.
  gallery = jax.eval_shape(lambda: model.apply(variables, video[:3], train=False, method="embed_video"))
  assert gallery.shape == (3, 19)


def test_emvgan_dropout():
  model, variables, video, music = _emvgan()
  eval_a = _apply(model, variables, video, music, train=False)
  eval_b = _apply(model, variables, video, music, train=False)
  for key in eval_a:
    np.testing.assert_array_equal(eval_a[key], eval_b[key])
  train_a = _apply(model, variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  train_b = _apply(model, variables, video, music, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert not np.allclose(train_a["video_embedding"], train_b["video_embedding"])
  assert not np.allclose(train_a["music_embedding"], train_b["music_embedding"])


@pytest.mark.slow
def test_emvgan_jit_and_grad():
  model, variables, video, music = _emvgan()

  @jax.jit
  def loss(params, rng):
    out = model.apply({"params": params}, video, music, train=True, rngs={"dropout": rng})
    return jnp.mean(out["match_logit"]) + jnp.mean(out["video_emotion_logits"] ** 2)

  value, grads = jax.value_and_grad(loss)(variables["params"], jax.random.PRNGKey(0))
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.abs(grads["match_scale"])) > 0.0
  out = jax.jit(lambda v, x, a: model.apply(v, x, a, train=False))(variables, video, music)
  eager = model.apply(variables, video, music, train=False)
  for key in out:
    np.testing.assert_allclose(out[key], eager[key], rtol=1e-5, atol=1e-6)


def test_count_params():
  tree = {"a": jnp.zeros((3, 5)), "b": {"c": jnp.zeros((7,)), "d": jnp.zeros(())}}
  assert models.count_params(tree) == 15 + 7 + 1


def test_a_shared_generator_top_exists_once_and_off_changes_nothing():
  video, music = jnp.zeros((2, 12)), jnp.zeros((2, 6))
  paths = lambda m: sorted(  # noqa: E731
    jax.tree_util.keystr(p)
    for p, _ in jax.tree_util.tree_leaves_with_path(jax.eval_shape(lambda: _init(m, video, music))["params"])
  )
  off = paths(models.GeneratorSide(hidden=8, embed_dim=4))
  assert off == paths(models.GeneratorSide(hidden=8, embed_dim=4, shared_top=False))
  assert "['video_generator']['residual_in']['kernel']" in off  # each generator's own layers, named as before
  on = paths(models.GeneratorSide(hidden=8, embed_dim=4, shared_top=True))
  assert [p for p in on if "generator" in p and "projection" not in p] == sorted(
    f"['generator_top']['{layer}']['{leaf}']"
    for layer, leaves in (
      ("layer_norm", ("bias", "scale")),
      ("residual_in", ("bias", "kernel")),
      ("residual_out", ("bias", "kernel")),
    )
    for leaf in leaves
  )
