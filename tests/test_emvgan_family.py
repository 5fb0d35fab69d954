"""EMVGAN's family options: the weight-decay mask, the conditioned discriminator and gradient reversal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train import random_batch

from emvgan_jax import config_lib, families, losses
from emvgan_jax.families import emvgan as emvgan_family


def _config(**overrides):
  config = config_lib.base_config()
  for key, value in {"emvgan.hidden": 16, "emvgan.embed_dim": 8, "emvgan.disc_hidden": 16, **overrides}.items():
    config_lib.set_field(config, key, value)
  return config


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


@pytest.mark.parametrize("which", ["kernels", "all"])
def test_masked_adamw_shrinks_only_what_the_mask_says(which):
  family = families.build(_config(**{"optim.decay_mask": which, "optim.weight_decay": 10.0}))
  state = family.init(jax.random.key(0), 12, 7)
  opt_g, _ = emvgan_family.optimizers(_config(**{"optim.decay_mask": which, "optim.weight_decay": 10.0}))
  gen_side = {"generator": state.params["generator"], "temperature": state.params["temperature"]}
  zero = jax.tree.map(jnp.zeros_like, gen_side)
  updates, _ = opt_g.update(zero, state.opt_state["generator"], gen_side)
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


@pytest.mark.parametrize("condition", ["emotion", "prediction"])
def test_conditioned_discriminator_sees_the_emotion_and_changes_the_adversarial_gradient(condition):
  batch = {k: jnp.asarray(v) for k, v in random_batch(16).items()}
  rng = jax.random.key(1)
  outs = {}
  for name in ("none", condition):
    family = families.build(_config(**{"loss.adv_condition": name}))
    state = family.init(jax.random.key(0), 12, 7)
    width = state.params["discriminator"]["dense_0"]["kernel"].shape[0]
    assert width == 8 + (0 if name == "none" else 5)
    new_state, metrics = jax.jit(family.train_step)(state, batch, rng)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    outs[name] = (metrics, new_state)
  # The supervised terms are the same; the adversarial term is not.
  assert float(outs["none"][0]["loss_nce"]) == pytest.approx(float(outs[condition][0]["loss_nce"]))
  assert float(outs["none"][0]["loss_adv"]) != pytest.approx(float(outs[condition][0]["loss_adv"]))


def test_unknown_condition_fails_clearly():
  with pytest.raises(ValueError, match="adv_condition must be one of"):
    families.build(_config(**{"loss.adv_condition": "genre"}))


def test_runs_saved_before_the_decay_mask_restore_with_decay_on_everything():
  old = config_lib.merge_onto_defaults({"model": "emvgan", "optim": {"learning_rate": 5e-4}})
  assert old.optim.decay_mask == "all"
  new = config_lib.merge_onto_defaults({"model": "emvgan", "optim": {"decay_mask": "kernels"}})
  assert new.optim.decay_mask == "kernels"
