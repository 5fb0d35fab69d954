"""From a config to a model family: its modules, optimizers, initial state, train step and predict step.

A small explicit mapping (config.model -> builder), not a registry: there are two families.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from emvgan_jax import steps
from emvgan_jax.models import baseline as baseline_lib
from emvgan_jax.models import discriminator as discriminator_lib
from emvgan_jax.models import emvgan as emvgan_lib


@dataclasses.dataclass(frozen=True)
class Family:
  """What the trainer and the evaluation tools need to know about one model family.

  Attributes:
    name: 'emvgan' or 'baseline'.
    description: a human-readable name for tables, e.g. 'EmoMV baseline (retrieval, multi-task)'.
    init: (rng, video_dim, music_dim) -> TrainState (pure; jit it with out_shardings).
    train_step: (state, batch, rng) -> (state, metrics) (pure; jit it).
    predict: (state, batch) -> dict of per-row 'video_embedding', 'music_embedding', 'score', and the scalar
      'loss' (mean over valid rows), the model selection loss.
    has_retrieval: whether the model is trained to embed for retrieval.
    score_is_probability: whether 'score' is p(matched) (threshold 0.5) or a cosine (threshold chosen on train).
    embed_video, embed_music: (state, features) -> common-space vectors (for galleries and queries).
  """

  name: str
  description: str
  init: Callable[..., steps.TrainState]
  train_step: Callable[..., Any]
  predict: Callable[..., dict[str, jax.Array]]
  has_retrieval: bool
  score_is_probability: bool
  embed_video: Callable[..., jax.Array]
  embed_music: Callable[..., jax.Array]


def build(config: ml_collections.ConfigDict) -> Family:
  if config.model == "baseline":
    return _baseline_family(config)
  if config.model == "emvgan":
    return _emvgan_family(config)
  raise ValueError(f"config.model must be 'emvgan' or 'baseline', got {config.model!r}")


def _dummy_inputs(video_dim: int, music_dim: int):
  return jnp.zeros((2, video_dim), jnp.float32), jnp.zeros((2, music_dim), jnp.float32)


# ------------------------------------------------------------------------------------------------------------


def _baseline_family(config: ml_collections.ConfigDict) -> Family:
  b = config.baseline
  if b.task not in ("retrieval", "classification"):
    raise ValueError(f"config.baseline.task must be 'retrieval' or 'classification', got {b.task!r}")
  model = baseline_lib.EmoMVBaseline(task=b.task, multitask=b.multitask, hidden=b.hidden, cbp_dim=b.cbp_dim,
                                     dropout_rate=b.dropout_rate)
  # EmoMV's optimizer: torch.optim.Adam(weight_decay=0.1) = L2 added to the gradient before Adam.
  optimizer = optax.chain(optax.add_decayed_weights(config.optim.weight_decay),
                          optax.adam(config.optim.learning_rate, b1=config.optim.b1, b2=config.optim.b2))

  def init(rng, video_dim: int, music_dim: int) -> steps.TrainState:
    p_rng, d_rng = jax.random.split(rng)
    variables = model.init({"params": p_rng, "dropout": d_rng}, *_dummy_inputs(video_dim, music_dim), train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params={"model": params}, constants=variables,
                            opt_state={"model": optimizer.init(params)})

  def apply(state, video, music, method=None):
    return model.apply({"params": state.params["model"], **state.constants}, video, music, train=False)

  def predict(state, batch):
    outputs = apply(state, batch["video"], batch["music"])
    loss, _ = steps.baseline_losses(outputs, batch, task=b.task, margin=config.loss.margin)
    if b.task == "classification":
      score = jax.nn.softmax(outputs["match_logits"], axis=-1)[:, 1]
    else:
      score = _cosine_rows(outputs["video_embedding"], outputs["music_embedding"])
    return {"video_embedding": outputs["video_embedding"], "music_embedding": outputs["music_embedding"],
            "score": score, "loss": loss}

  def embed_video(state, video):
    return apply(state, video, jnp.zeros((video.shape[0], _music_dim(state)), video.dtype))["video_embedding"]

  def embed_music(state, music):
    return apply(state, jnp.zeros((music.shape[0], _video_dim(state)), music.dtype), music)["music_embedding"]

  variant = f"{b.task}, {'multi' if b.multitask else 'single'}-task"
  if b.published_rng_quirk:
    variant += ", published RNG quirk"
  return Family(
      name="baseline",
      description=f"EmoMV baseline ({variant})",
      init=init,
      train_step=functools.partial(steps.baseline_train_step, model=model, optimizer=optimizer, task=b.task,
                                   margin=config.loss.margin, frozen_dropout=b.published_rng_quirk),
      predict=predict,
      has_retrieval=b.task == "retrieval",
      score_is_probability=b.task == "classification",
      embed_video=embed_video,
      embed_music=embed_music,
  )


def _video_dim(state) -> int:
  """Input widths from the first layers' kernels (`video_fc`, `music_fc` in models/baseline.py)."""
  return int(state.params["model"]["video_fc"]["kernel"].shape[0])


def _music_dim(state) -> int:
  return int(state.params["model"]["music_fc"]["kernel"].shape[0])


def _cosine_rows(a, b):
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
  return jnp.sum(a * b, axis=-1)


# ------------------------------------------------------------------------------------------------------------


def _emvgan_family(config: ml_collections.ConfigDict) -> Family:
  e, o, lc = config.emvgan, config.optim, config.loss
  generator = emvgan_lib.EMVGANGenerator(hidden=e.hidden, embed_dim=e.embed_dim, dropout_rate=e.dropout_rate)
  discriminator = discriminator_lib.ModalityDiscriminator(hidden=e.disc_hidden)
  if lc.adv_mode not in ("flip", "confusion"):
    raise ValueError(f"config.loss.adv_mode must be 'flip' or 'confusion', got {lc.adv_mode!r}")
  if o.n_disc < 1:
    raise ValueError(f"config.optim.n_disc must be >= 1, got {o.n_disc}")
  adamw_g = optax.adamw(o.learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)
  # The temperature is a generator-side parameter trained only when asked; otherwise its update is zero.
  opt_g = optax.multi_transform(
      {"train": adamw_g, "frozen": optax.set_to_zero()},
      {"generator": "train", "temperature": "train" if lc.learn_temperature else "frozen"},
  )
  opt_d = optax.adamw(o.disc_learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.disc_weight_decay)

  def init(rng, video_dim: int, music_dim: int) -> steps.TrainState:
    g_rng, d_rng, drop_rng = jax.random.split(rng, 3)
    video, music = _dummy_inputs(video_dim, music_dim)
    g_params = generator.init({"params": g_rng, "dropout": drop_rng}, video, music, train=False)["params"]
    d_params = discriminator.init(d_rng, jnp.zeros((2, e.embed_dim), jnp.float32))["params"]
    gen_side = {"generator": g_params, "temperature": {"log_inv": jnp.asarray(-np.log(lc.temperature), jnp.float32)}}
    return steps.TrainState(
        step=jnp.zeros((), jnp.int32),
        params={**gen_side, "discriminator": d_params},
        constants={},
        opt_state={"generator": opt_g.init(gen_side), "discriminator": opt_d.init(d_params)},
    )

  def predict(state, batch):
    outputs = generator.apply({"params": state.params["generator"]}, batch["video"], batch["music"], train=False)
    _, supervised, _ = steps.emvgan_generator_losses(
        outputs, batch, disc_logits=None, cfg=lc, temp=steps.temperature(state.params), adv_weight=0.0)
    return {"video_embedding": outputs["video_embedding"], "music_embedding": outputs["music_embedding"],
            "score": jax.nn.sigmoid(outputs["match_logit"]), "loss": supervised}

  def embed_video(state, video):
    return generator.apply({"params": state.params["generator"]}, video, train=False,
                           method=emvgan_lib.EMVGANGenerator.embed_video)

  def embed_music(state, music):
    return generator.apply({"params": state.params["generator"]}, music, train=False,
                           method=emvgan_lib.EMVGANGenerator.embed_music)

  return Family(
      name="emvgan",
      description="EMVGAN" if lc.w_adv > 0 else "EMVGAN (no adversarial term)",
      init=init,
      train_step=functools.partial(steps.emvgan_train_step, generator=generator, discriminator=discriminator,
                                   opt_g=opt_g, opt_d=opt_d, loss_cfg=lc, n_disc=o.n_disc),
      predict=predict,
      has_retrieval=True,
      score_is_probability=True,
      embed_video=embed_video,
      embed_music=embed_music,
  )
