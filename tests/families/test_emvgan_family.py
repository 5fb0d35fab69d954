"""EMVGAN's family options: the weight-decay mask, the conditioned discriminator and gradient reversal."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_batch

from emvgan_jax import config_lib, families, losses
from emvgan_jax.data import emomv
from emvgan_jax.families import emvgan as emvgan_family
from emvgan_jax.models import discriminator as discriminator_lib
from emvgan_jax.models import emvgan as emvgan_lib


def _config(**overrides):
  config = config_lib.base_config()
  for key, value in {"emvgan.hidden": 16, "emvgan.embed_dim": 8, "emvgan.disc_hidden": 16, **overrides}.items():
    config_lib.set_field(config, key, value)
  return config


@functools.cache
def _step(**overrides):
  """(initial state, metrics and state after one train step) of a tiny EMVGAN with `overrides`, jitted."""
  family = families.build(_config(**overrides))
  state = jax.jit(lambda key: family.init(key, 12, 7))(jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in random_batch(16).items()}
  new_state, metrics = jax.jit(family.train_step)(state, batch, jax.random.key(1))
  return state, {k: float(v) for k, v in metrics.items()}, new_state


def test_decay_mask_selects_dense_kernels_only():
  params = {
    "dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)},
    "layer_norm": {"scale": jnp.ones(3)},
    "match_scale": jnp.ones(()),
    "temperature": {"log_inv": jnp.ones(())},
  }
  mask = emvgan_family.decay_mask(params)
  assert mask == {
    "dense": {"kernel": True, "bias": False},
    "layer_norm": {"scale": False},
    "match_scale": False,
    "temperature": {"log_inv": False},
  }
  assert all(jax.tree.leaves(emvgan_family.decay_mask(params, "all")))
  with pytest.raises(ValueError, match="decay_mask"):
    emvgan_family.decay_mask(params, "biases")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["kernels", "all"])
def test_masked_adamw_shrinks_only_what_the_mask_says(which):
  config = _config(**{"optim.decay_mask": which, "optim.weight_decay": 10.0})
  state = jax.jit(lambda key: families.build(config).init(key, 12, 7))(jax.random.key(0))
  opt_g, _ = emvgan_family.optimizers(config)
  gen_side = {"generator": state.params["generator"], "temperature": state.params["temperature"]}
  zero = jax.tree.map(jnp.zeros_like, gen_side)
  updates, _ = jax.jit(opt_g.update)(zero, state.opt_state["generator"], gen_side)
  # With zero gradients AdamW's update is -lr * wd * param on the decayed leaves and 0 elsewhere.
  lr_wd = 5e-4 * 10.0
  params = jax.tree_util.tree_flatten_with_path(gen_side["generator"])[0]
  for (path, param), update in zip(params, jax.tree.leaves(updates["generator"])):
    decayed = which == "all" or path[-1].key == "kernel"
    want = -lr_wd * np.asarray(param) if decayed else np.zeros_like(param)
    np.testing.assert_allclose(update, want, rtol=1e-5, atol=1e-12, err_msg=str(path))
  # The layer-norm scales start at 1: only a mask that decays everything moves them.
  scale = updates["generator"]["video_encoder"]["layer_norm"]["scale"]
  assert bool(jnp.all(scale != 0)) == (which == "all")
  assert float(updates["temperature"]["log_inv"]) == 0.0  # frozen, whatever the mask


def test_reversal_is_minus_the_discriminator_loss():
  lv, lm = jnp.array([0.3, -1.2, 2.0]), jnp.array([-0.4, 0.9, 0.0])
  mask = jnp.array([True, True, False])
  want = -losses.discriminator_loss(lv, lm, mask=mask)
  assert float(losses.generator_adversarial_loss(lv, lm, mode="reversal", mask=mask)) == pytest.approx(float(want))


def test_discriminator_inputs_by_condition():
  batch = {"video_emotion": jnp.array([0, 3]), "music_emotion": jnp.array([4, 1])}
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
  outputs = {"video_emotion_logits": logits, "music_emotion_logits": -logits}
  assert emvgan_family._discriminator_input(outputs, "video", batch=batch, condition="none") is None
  label = emvgan_family._discriminator_input(outputs, "music", batch=batch, condition="emotion")
  np.testing.assert_array_equal(label, np.eye(5)[[4, 1]])
  pred = emvgan_family._discriminator_input(outputs, "video", batch=batch, condition="prediction")
  np.testing.assert_allclose(pred, jax.nn.softmax(logits, axis=-1))
  # The prediction is a condition, not a target: no gradient flows back into the emotion head through it.
  grad = jax.grad(
    lambda x: emvgan_family._discriminator_input(
      {"video_emotion_logits": x}, "video", batch=batch, condition="prediction"
    ).sum()
  )(logits)
  np.testing.assert_array_equal(grad, np.zeros_like(logits))


@pytest.mark.slow
def test_conditioned_discriminator_on_clean_embeddings_in_the_train_step():
  """One step with both options: the discriminator sees the dropout-free embeddings with their one-hot emotion."""
  _, plain, _ = _step()  # the defaults: encoder dropout 0.7, no condition, the dropout pass
  state, metrics, _ = _step(**{"loss.adv_condition": "emotion", "loss.adv_inputs": "clean"})
  assert state.params["discriminator"]["dense_0"]["kernel"].shape[0] == 8 + 5  # one input per emotion class
  assert all(np.isfinite(v) for v in metrics.values())
  assert metrics["loss_nce"] == pytest.approx(plain["loss_nce"])  # the supervised pass is the same
  assert metrics["loss_adv"] != pytest.approx(plain["loss_adv"])
  # The discriminator's loss (before its update) is that of the initial D on [clean embedding, one-hot emotion].
  generator = emvgan_lib.GeneratorSide(hidden=16, embed_dim=8, dropout_rate=0.7)
  disc = discriminator_lib.ModalityDiscriminator(hidden=16)
  batch = {k: jnp.asarray(v) for k, v in random_batch(16).items()}

  @jax.jit
  def want(params):
    out = generator.apply({"params": params["generator"]}, batch["video"], batch["music"], train=False)

    def logits(modality):
      onehot = jax.nn.one_hot(batch[f"{modality}_emotion"], 5)
      inputs = jnp.concatenate([out[f"{modality}_embedding"], onehot], axis=-1)
      return disc.apply({"params": params["discriminator"]}, inputs)

    return losses.discriminator_loss(logits("video"), logits("music"), mask=batch["mask"])

  assert metrics["loss_disc"] == pytest.approx(float(want(state.params)), rel=1e-5)


def test_unknown_options_fail_clearly():
  with pytest.raises(ValueError, match="adv_condition must be one of"):
    families.build(_config(**{"loss.adv_condition": "genre"}))
  with pytest.raises(ValueError, match="adv_inputs must be 'train' or 'clean'"):
    families.build(_config(**{"loss.adv_inputs": "noisy"}))


def test_runs_saved_before_the_decay_mask_restore_with_decay_on_everything():
  old = config_lib.merge_onto_defaults({"model": "emvgan", "optim": {"learning_rate": 5e-4}})
  assert old.optim.decay_mask == "all"
  new = config_lib.merge_onto_defaults({"model": "emvgan", "optim": {"decay_mask": "kernels"}})
  assert new.optim.decay_mask == "kernels"


@pytest.mark.slow
def test_centroid_gap_loss_by_hand_and_ignores_padding():
  zv = jnp.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 5.0]])
  zm = jnp.array([[0.0, 0.0], [0.0, 0.0], [7.0, 7.0]])
  mask = jnp.array([True, True, False])
  # Valid centroids: video (0.5, 0.5), music (0, 0): squared distance 0.5; the padding row (with a NaN) counts
  # for nothing.
  assert float(losses.centroid_gap_loss(zv, zm, mask=mask)) == pytest.approx(0.5)
  assert float(losses.centroid_gap_loss(zv[:2], zv[:2])) == 0.0
  grad = jax.grad(lambda v: losses.centroid_gap_loss(v, zm, mask=mask))(zv)
  assert bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.slow
def test_gap_term_is_off_by_default_and_added_when_weighted():
  batch = {k: jnp.asarray(v) for k, v in random_batch(16).items()}
  outputs = {
    "video_embedding": jnp.ones((16, 8)) / np.sqrt(8),
    "music_embedding": -jnp.ones((16, 8)) / np.sqrt(8),
    "video_emotion_logits": jnp.zeros((16, 5)),
    "music_emotion_logits": jnp.zeros((16, 5)),
    "match_logit": jnp.zeros(16),
  }

  def losses_of(**fields):  # one program, not one per operation run eagerly
    cfg = _config(**{"loss.w_va": 0.0, **fields}).loss
    run = lambda o, b: emvgan_family.generator_losses(o, b, disc_logits=None, cfg=cfg, temp=0.3, adv_weight=0.0)
    return jax.jit(run)(outputs, batch)

  off, on = losses_of(), losses_of(**{"loss.w_gap": 2.0})
  assert "gap" not in off[2] and float(on[2]["gap"]) == pytest.approx(4.0)  # ||2 / sqrt(8) * ones(8)||^2
  assert float(on[0]) == pytest.approx(float(off[0]) + 2.0 * 4.0)
  assert float(on[1]) == pytest.approx(float(off[1]))  # not part of the selection loss


def test_valence_arousal_table_is_russells_anchors_on_the_unit_circle():
  va = emvgan_family.VALENCE_AROUSAL
  np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, rtol=1e-6)
  by_name = dict(zip(emomv.EMOTIONS, va))
  # Quadrants of the circumplex: exciting pleasant and aroused; fear and sad unpleasant; relax calm and pleasant.
  assert by_name["exciting"][0] > 0 < by_name["exciting"][1]
  assert by_name["fear"][0] < 0 < by_name["fear"][1] and by_name["sad"][0] < 0 and by_name["sad"][1] < 0
  assert by_name["relax"][0] > 0 > by_name["relax"][1]
  np.testing.assert_allclose(by_name["tense"], [0.0, 1.0], atol=1e-7)  # Russell's 'arousal' anchor, 90 degrees


@pytest.mark.slow
def test_valence_arousal_term_by_hand_and_off_leaves_the_model_unchanged():
  rows = np.array([[0.0, 0.0], [1.0, 1.0], [np.nan, 3.0]])
  target = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
  mask = jnp.array([True, True, False])
  # Row 0: 9 + 16 = 25; row 1: 0 + 1 = 1; the padding row (NaN) counts for nothing: mean 13.
  assert float(losses.squared_error_loss(jnp.asarray(rows), jnp.asarray(target), mask=mask)) == pytest.approx(13.0)
  off, _, _ = _step(**{"loss.w_va": 0.0})
  on, metrics, _ = _step(**{"loss.w_va": 1.0})
  assert "va_head" not in off.params["generator"] and on.params["generator"]["va_head"]["kernel"].shape == (8, 2)
  # The other parameters are initialised exactly as without the head.
  without_head = {k: v for k, v in on.params["generator"].items() if k != "va_head"}
  jax.tree.map(np.testing.assert_array_equal, without_head, off.params["generator"])
  assert np.isfinite(metrics["loss_va"]) and metrics["loss_va"] > 0


@pytest.mark.slow
def test_linear_discriminator_is_one_dense_layer():
  disc = discriminator_lib.ModalityDiscriminator(hidden=0)
  z = jax.random.normal(jax.random.key(0), (4, 8))
  params = disc.init(jax.random.key(1), z)["params"]
  assert set(params) == {"logit"}
  expected = z @ params["logit"]["kernel"][:, 0] + params["logit"]["bias"][0]
  np.testing.assert_allclose(disc.apply({"params": params}, z), expected, rtol=1e-6)
  _, metrics, _ = _step(**{"emvgan.disc_hidden": 0})
  assert np.isfinite(metrics["loss_disc"]) and 0.0 <= metrics["disc_accuracy"] <= 1.0


# --- alignment by construction and the sigmoid loss: each off by default, and off changes nothing ----------------


def test_the_new_options_are_off_by_default_and_add_no_state():
  state, plain, _ = _step()
  assert set(state.params) == {"generator", "temperature", "discriminator"}
  assert "generator_top" not in state.params["generator"] and "sigmoid_bias" not in plain


@pytest.mark.slow
def test_running_centres_are_the_bias_corrected_mean_and_embeddings_use_them():
  family = families.build(_config(**{"emvgan.centre": True, "emvgan.centre_momentum": 0.9}))
  state, _, after = _step(**{"emvgan.centre": True, "emvgan.centre_momentum": 0.9})
  assert emvgan_family.running_centres(state.params, state.step, 0.9)[0].tolist() == [0.0] * 8  # none yet
  # After one step the bias-corrected running mean is that step's batch mean of the uncentred embeddings (of the
  # pass the adversarial game sees: by default `adv_inputs='train'`, the step's dropout pass, redone here).
  batch = {k: jnp.asarray(v) for k, v in random_batch(16).items()}
  generator = emvgan_lib.GeneratorSide(hidden=16, embed_dim=8, dropout_rate=0.7, valence_arousal=True)
  g_rng = jax.random.split(jax.random.fold_in(jax.random.key(1), 0))[0]
  zero = (jnp.zeros(8), jnp.zeros(8))
  out = generator.apply(
    {"params": state.params["generator"]},
    batch["video"],
    batch["music"],
    train=True,
    centres=zero,
    rngs={"dropout": g_rng},
  )
  w = np.asarray(batch["mask"], np.float64)[:, None]
  want = (np.asarray(out["video_uncentred"]) * w).sum(0) / w.sum()
  centre_v, _ = emvgan_family.running_centres(after.params, after.step, 0.9)
  np.testing.assert_allclose(np.asarray(centre_v), want, rtol=1e-5, atol=1e-6)
  # Embedding a video: the uncentred vector minus the centre, normalised again.
  raw = generator.apply({"params": after.params["generator"]}, batch["video"], train=False, method="embed_video")
  moved = np.asarray(raw) - np.asarray(centre_v)
  got = jax.jit(family.embed_video)(after, batch["video"])
  np.testing.assert_allclose(
    np.asarray(got), moved / np.linalg.norm(moved, axis=1, keepdims=True), rtol=1e-5, atol=1e-6
  )


@pytest.mark.slow
def test_the_sigmoid_loss_trains_its_bias_and_its_term_is_the_losses_value():
  state, metrics, after = _step(**{"loss.contrastive": "sigmoid", "loss.sigmoid_bias_init": -2.0})
  assert float(state.params["sigmoid"]["bias"]) == -2.0 and float(after.params["sigmoid"]["bias"]) != -2.0
  assert metrics["sigmoid_bias"] == float(after.params["sigmoid"]["bias"])
  assert np.isfinite(metrics["loss_nce"]) and metrics["loss_nce"] > 0


def test_a_running_mean_that_cannot_move_is_refused():
  with pytest.raises(config_lib.ConfigError, match=r"emvgan.centre_momentum=1.0 must be in \[0, 1\)"):
    config_lib.validate(_config(**{"emvgan.centre_momentum": 1.0}))
