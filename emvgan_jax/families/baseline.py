"""The EmoMV benchmark models as a family: one optimiser on the published loss (docs/models.md, section 1).

EmoMV's optimiser is `torch.optim.Adam(weight_decay=0.1)`: an L2 term added to the gradient before Adam, so
here `optax.chain(add_decayed_weights, adam)`. Retrieval variants score a pair by the cosine of its two
embeddings (a threshold for accuracy and F1 is then chosen on train); classification variants by p(matched).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from emvgan_jax import losses
from emvgan_jax.families.base import Batch, Family, TrainState, dummy_inputs, float32_metrics
from emvgan_jax.models import baseline as baseline_lib
from emvgan_jax.ops import cosine_rows

TASKS = ("retrieval", "classification")
# The config fields that define a baseline run (with data and seed); the other families' sections do not.
CONFIG_KEYS = ("baseline", "loss.margin", "optim.learning_rate", "optim.weight_decay", "optim.b1", "optim.b2")


def baseline_losses(
  outputs: dict[str, jax.Array], batch: Batch, *, task: str, margin: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The published loss of a baseline variant, and its terms."""
  mask = batch["mask"]
  terms = {}
  if task == "retrieval":
    terms["pair"] = losses.margin_contrastive_loss(
      outputs["video_embedding"], outputs["music_embedding"], batch["match"], margin=margin, mask=mask
    )
  else:
    terms["match"] = losses.softmax_cross_entropy(outputs["match_logits"], batch["match"], mask=mask)
  if "video_emotion_logits" in outputs:
    terms["video_emotion"] = losses.softmax_cross_entropy(
      outputs["video_emotion_logits"], batch["video_emotion"], mask=mask
    )
    terms["music_emotion"] = losses.softmax_cross_entropy(
      outputs["music_emotion_logits"], batch["music_emotion"], mask=mask
    )
  return sum(terms.values()), terms


def train_step(
  state: TrainState,
  batch: Batch,
  rng: jax.Array,
  *,
  model: nn.Module,
  optimizer: optax.GradientTransformation,
  task: str,
  margin: float,
  frozen_dropout: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step of an EmoMV baseline (`frozen_dropout`: the published code's quirk, same key every step)."""
  rng = jax.random.fold_in(rng, 0 if frozen_dropout else state.step)

  def loss_fn(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    outputs = model.apply(
      {"params": params, **state.constants}, batch["video"], batch["music"], train=True, rngs={"dropout": rng}
    )
    loss, terms = baseline_losses(outputs, batch, task=task, margin=margin)
    return loss, terms

  (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["model"])
  updates, opt_state = optimizer.update(grads, state.opt_state["model"], state.params["model"])
  params = optax.apply_updates(state.params["model"], updates)
  metrics = {
    "loss": loss,
    **{f"loss_{k}": v for k, v in terms.items()},
    "grad_norm": optax.tree.norm(grads),
    "param_norm": optax.tree.norm(params),
  }
  new_state = state.replace(step=state.step + 1, params={"model": params}, opt_state={"model": opt_state})
  return new_state, float32_metrics(metrics)


def _input_widths(state: TrainState) -> tuple[int, int]:
  """(video, music) input widths from the first layers' kernels (`video_fc`, `music_fc` in models/baseline.py)."""
  params = state.params["model"]
  return int(params["video_fc"]["kernel"].shape[0]), int(params["music_fc"]["kernel"].shape[0])


def build(config: ml_collections.ConfigDict) -> Family:
  """The baseline variant of `config.baseline` with the optimiser of `config.optim`."""
  b = config.baseline
  if b.task not in TASKS:
    raise ValueError(f"config.baseline.task must be 'retrieval' or 'classification', got {b.task!r}")
  model = baseline_lib.EmoMVBaseline(
    task=b.task, multitask=b.multitask, hidden=b.hidden, cbp_dim=b.cbp_dim, dropout_rate=b.dropout_rate
  )
  optimizer = optax.chain(
    optax.add_decayed_weights(config.optim.weight_decay),
    optax.adam(config.optim.learning_rate, b1=config.optim.b1, b2=config.optim.b2),
  )

  def init(rng: jax.Array, video_dim: int, music_dim: int) -> TrainState:
    p_rng, d_rng = jax.random.split(rng)
    variables = model.init({"params": p_rng, "dropout": d_rng}, *dummy_inputs(video_dim, music_dim), train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params={"model": params},
      constants=variables,
      opt_state={"model": optimizer.init(params)},
    )

  def apply(state: TrainState, video: jax.Array, music: jax.Array) -> dict[str, jax.Array]:
    return model.apply({"params": state.params["model"], **state.constants}, video, music, train=False)

  def predict(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    outputs = apply(state, batch["video"], batch["music"])
    loss, _ = baseline_losses(outputs, batch, task=b.task, margin=config.loss.margin)
    if b.task == "classification":
      score = jax.nn.softmax(outputs["match_logits"], axis=-1)[:, 1]
    else:
      score = cosine_rows(outputs["video_embedding"], outputs["music_embedding"])
    return {
      "video_embedding": outputs["video_embedding"],
      "music_embedding": outputs["music_embedding"],
      "score": score,
      "loss": loss,
    }

  # One modality at a time: the other branch gets zeros and its output is dropped.
  def embed_video(state: TrainState, video: jax.Array) -> jax.Array:
    music = jnp.zeros((video.shape[0], _input_widths(state)[1]), video.dtype)
    return apply(state, video, music)["video_embedding"]

  def embed_music(state: TrainState, music: jax.Array) -> jax.Array:
    video = jnp.zeros((music.shape[0], _input_widths(state)[0]), music.dtype)
    return apply(state, video, music)["music_embedding"]

  variant = f"{b.task}, {'multi' if b.multitask else 'single'}-task"
  if b.published_rng_quirk:
    variant += ", published RNG quirk"
  return Family(
    name="baseline",
    model_name=f"baseline_{b.task}_{'multi' if b.multitask else 'single'}",
    description=f"EmoMV baseline ({variant})",
    init=init,
    train_step=functools.partial(
      train_step,
      model=model,
      optimizer=optimizer,
      task=b.task,
      margin=config.loss.margin,
      frozen_dropout=b.published_rng_quirk,
    ),
    predict=predict,
    embed_video=embed_video,
    embed_music=embed_music,
    has_retrieval=b.task == "retrieval",
    score_is_probability=b.task == "classification",
    # The published code's RNG quirk also repeats one data order every epoch.
    fixed_data_order=b.published_rng_quirk,
  )
