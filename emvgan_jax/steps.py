"""Train and predict steps: pure functions of (state, batch, rng), jitted once by the trainer.

`emvgan_train_step` does `n_disc` discriminator updates and then one generator update, each with its own optax
optimizer; `baseline_train_step` is one optimizer on one loss. Both return every loss term as a metric. The
batch is a dict of global arrays with a boolean `mask` (padding rows are False and count for nothing).
Randomness is `fold_in(rng, state.step)`, so a resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from emvgan_jax import losses


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue: saved whole in checkpoints.

  Attributes:
    step: number of completed train steps.
    params: trained parameters: {'model'} for the baselines; {'generator', 'discriminator', 'temperature'} for
      EMVGAN.
    constants: non-trained variables (the baselines' compact-bilinear-pooling hashes); {} when none.
    opt_state: one optimizer state per optimizer, keyed like the optimizers ('model' or 'generator' and
      'discriminator').
  """

  step: jax.Array
  params: Any
  constants: Any
  opt_state: Any


def _mean_metrics(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------------------------
# EmoMV baselines.
# ------------------------------------------------------------------------------------------------------------


def baseline_losses(outputs: dict[str, jax.Array], batch: dict[str, jax.Array], *, task: str, margin: float):
  """The published loss of a baseline variant, and its terms."""
  mask = batch["mask"]
  terms = {}
  if task == "retrieval":
    terms["pair"] = losses.margin_contrastive_loss(
        outputs["video_embedding"], outputs["music_embedding"], batch["match"], margin=margin, mask=mask)
  else:
    terms["match"] = losses.softmax_cross_entropy(outputs["match_logits"], batch["match"], mask=mask)
  if "video_emotion_logits" in outputs:
    terms["video_emotion"] = losses.softmax_cross_entropy(
        outputs["video_emotion_logits"], batch["video_emotion"], mask=mask)
    terms["music_emotion"] = losses.softmax_cross_entropy(
        outputs["music_emotion_logits"], batch["music_emotion"], mask=mask)
  return sum(terms.values()), terms


def baseline_train_step(state: TrainState, batch, rng, *, model: nn.Module, optimizer: optax.GradientTransformation,
                        task: str, margin: float, frozen_dropout: bool = False):
  """One optimizer step of an EmoMV baseline (`frozen_dropout`: the published code's quirk, same key every step)."""
  rng = jax.random.fold_in(rng, 0 if frozen_dropout else state.step)

  def loss_fn(params):
    outputs = model.apply({"params": params, **state.constants}, batch["video"], batch["music"], train=True,
                          rngs={"dropout": rng})
    loss, terms = baseline_losses(outputs, batch, task=task, margin=margin)
    return loss, terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["model"])
  updates, opt_state = optimizer.update(grads, state.opt_state["model"], state.params["model"])
  params = optax.apply_updates(state.params["model"], updates)
  metrics = {"loss": loss, **{f"loss_{k}": v for k, v in terms.items()}, "grad_norm": optax.tree.norm(grads),
             "param_norm": optax.tree.norm(params)}
  new_state = state.replace(step=state.step + 1, params={"model": params}, opt_state={"model": opt_state})
  return new_state, _mean_metrics(metrics)


# ------------------------------------------------------------------------------------------------------------
# EMVGAN.
# ------------------------------------------------------------------------------------------------------------


def temperature(params) -> jax.Array:
  """InfoNCE temperature from its parameter (stored as log(1/T), clipped so 1/T stays in [1, 100])."""
  return 1.0 / jnp.exp(jnp.clip(params["temperature"]["log_inv"], 0.0, jnp.log(100.0)))


def emvgan_generator_losses(outputs, batch, *, disc_logits, cfg: ml_collections.ConfigDict, temp, adv_weight):
  """The generator's loss terms and their weighted total `L_G` (models.md, section 2)."""
  mask = batch["mask"]
  matched = jnp.logical_and(mask, batch["match"] == 1)
  zv, zm = outputs["video_embedding"], outputs["music_embedding"]
  terms = {
      "pair": losses.margin_contrastive_loss(zv, zm, batch["match"], margin=cfg.margin, mask=mask),
      "nce": losses.info_nce_loss(
          zv, zm, temperature=temp, mask=matched, video_emotion=batch["video_emotion"],
          music_emotion=batch["music_emotion"], emotion_positives=cfg.emotion_positives),
      "emo": 0.5 * (losses.softmax_cross_entropy(outputs["video_emotion_logits"], batch["video_emotion"], mask=mask)
                    + losses.softmax_cross_entropy(outputs["music_emotion_logits"], batch["music_emotion"],
                                                   mask=mask)),
      "match": losses.sigmoid_binary_cross_entropy(outputs["match_logit"], batch["match"], mask=mask),
  }
  supervised = (cfg.w_pair * terms["pair"] + cfg.w_nce * terms["nce"] + cfg.w_emo * terms["emo"]
                + cfg.w_match * terms["match"])
  total = supervised
  if disc_logits is not None:
    terms["adv"] = losses.generator_adversarial_loss(*disc_logits, mode=cfg.adv_mode, mask=mask)
    total = total + adv_weight * terms["adv"]
  return total, supervised, terms


def adversarial_weight(step, cfg: ml_collections.ConfigDict):
  if cfg.adv_warmup_steps > 0:
    return cfg.w_adv * jnp.minimum(1.0, (step + 1) / cfg.adv_warmup_steps)
  return jnp.asarray(cfg.w_adv, jnp.float32)


def emvgan_train_step(state: TrainState, batch, rng, *, generator: nn.Module, discriminator: nn.Module,
                      opt_g: optax.GradientTransformation, opt_d: optax.GradientTransformation,
                      loss_cfg: ml_collections.ConfigDict, n_disc: int):
  """`n_disc` discriminator updates, then one generator update."""
  rng = jax.random.fold_in(rng, state.step)
  g_rng, d_rng = jax.random.split(rng)
  mask = batch["mask"]

  def generate(gen_params, key):
    return generator.apply({"params": gen_params}, batch["video"], batch["music"], train=True,
                           rngs={"dropout": key})

  # --- discriminator: learns to tell video embeddings (1) from music embeddings (0) ---------------------------
  # The embeddings it sees come from the generators before this step's generator update; sg() of models.md.
  fake = jax.lax.stop_gradient(generate(state.params["generator"], g_rng))
  zv, zm = fake["video_embedding"], fake["music_embedding"]

  def d_loss_fn(d_params):
    lv = discriminator.apply({"params": d_params}, zv)
    lm = discriminator.apply({"params": d_params}, zm)
    loss = losses.discriminator_loss(lv, lm, mask=mask)
    if loss_cfg.r1_weight > 0:
      loss = loss + loss_cfg.r1_weight * losses.r1_penalty(
          lambda p, z: discriminator.apply({"params": p}, z), d_params, zv, mask=mask)
    return loss, (lv, lm)

  d_params, d_opt_state = state.params["discriminator"], state.opt_state["discriminator"]
  del d_rng  # the discriminator has no dropout; kept split so adding some does not shift the generator's keys
  for _ in range(n_disc):
    (d_loss, (lv, lm)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    d_updates, d_opt_state = opt_d.update(d_grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, d_updates)
  d_acc = losses.binary_accuracy_from_logits(lv, lm, mask=mask)

  # --- generators: fit the pair/emotion structure and fool the (just updated) discriminator ------------------
  adv_weight = adversarial_weight(state.step, loss_cfg)

  def g_loss_fn(g_params):
    outputs = generate(g_params["generator"], g_rng)
    disc_logits = (discriminator.apply({"params": d_params}, outputs["video_embedding"]),
                   discriminator.apply({"params": d_params}, outputs["music_embedding"]))
    total, _, terms = emvgan_generator_losses(
        outputs, batch, disc_logits=disc_logits, cfg=loss_cfg, temp=temperature(g_params), adv_weight=adv_weight)
    return total, terms

  g_params = {"generator": state.params["generator"], "temperature": state.params["temperature"]}
  (g_loss, terms), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_params)
  g_updates, g_opt_state = opt_g.update(g_grads, state.opt_state["generator"], g_params)
  g_params = optax.apply_updates(g_params, g_updates)

  metrics = {
      "loss": g_loss,
      **{f"loss_{k}": v for k, v in terms.items()},
      "loss_disc": d_loss,
      "disc_accuracy": d_acc,
      "adv_weight": adv_weight,
      "temperature": temperature(g_params),
      "grad_norm": optax.tree.norm(g_grads),
      # A finite loss with a non-finite update (e.g. a huge learning rate) shows up here one step earlier.
      "param_norm": optax.tree.norm(g_params) + optax.tree.norm(d_params),
  }
  new_state = state.replace(
      step=state.step + 1,
      params={**g_params, "discriminator": d_params},
      opt_state={"generator": g_opt_state, "discriminator": d_opt_state},
  )
  return new_state, _mean_metrics(metrics)
