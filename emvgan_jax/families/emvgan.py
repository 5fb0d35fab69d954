"""EMVGAN as a family: the generator side and the discriminator, each with its own AdamW (docs/models.md, section 2).

`train_step` does `n_disc` discriminator updates and then one generator update. The batch is a dict of global
arrays with a boolean `mask` (padding rows are False and count for nothing). Randomness is
`fold_in(rng, state.step)`, so a resumed run draws the same dropout masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from emvgan_jax import contrastive, losses
from emvgan_jax.families.base import Batch, Family, TrainState, dummy_inputs, float32_metrics
from emvgan_jax.models import discriminator as discriminator_lib
from emvgan_jax.models import emvgan as emvgan_lib

ADV_MODES = ("flip", "confusion", "reversal")
NUM_EMOTIONS = emvgan_lib.GeneratorSide.num_emotions  # the emotion head's width (EmoMV's five classes)
CONFIG_KEYS = ("emvgan", "loss", "optim")  # the config sections that define an EMVGAN run (with data and seed)

# Valence-arousal coordinates of EmoMV's five classes (EmoMV itself has none), for `loss.w_va`: each class is put
# at the angle of one of the eight anchor concepts of Russell's circumplex (J. A. Russell, "A circumplex model of
# affect", J. Pers. Soc. Psychol. 39(6), 1980: pleasure 0, excitement 45, arousal 90, distress 135, displeasure
# 180, depression 225, sleepiness 270, relaxation 315 degrees) on the unit circle, (valence, arousal) =
# (cos, sin). The angles are Russell's; which anchor each class gets is this project's reading:
# exciting -> excitement, tense -> arousal, fear -> distress, sad -> depression, relax -> relaxation.
VALENCE_AROUSAL_DEGREES = (45.0, 135.0, 90.0, 225.0, 315.0)  # by class id: exciting, fear, tense, sad, relax
VALENCE_AROUSAL = np.stack(
  [np.cos(np.radians(VALENCE_AROUSAL_DEGREES)), np.sin(np.radians(VALENCE_AROUSAL_DEGREES))], axis=1
).astype(np.float32)


def temperature(params: Any) -> jax.Array:
  """InfoNCE temperature from its parameter (stored as log(1/T), clipped so 1/T stays in [1, 100])."""
  return 1.0 / jnp.exp(jnp.clip(params["temperature"]["log_inv"], 0.0, jnp.log(100.0)))


NCE_IMPLS = ("blockwise", "dense")
CONTRASTIVE = ("softmax", "sigmoid")  # `loss.contrastive`: InfoNCE, or SigLIP's pairwise sigmoid loss


def sigmoid_bias(params: Any) -> jax.Array | None:
  """The sigmoid loss's learned logit bias, or None for a model trained with InfoNCE (it has no such parameter)."""
  return params["sigmoid"]["bias"] if "sigmoid" in params else None


COMPUTE_DTYPES = ("float32", "bfloat16")


def info_nce(
  zv: jax.Array,
  zm: jax.Array,
  batch: Batch,
  *,
  mask: jax.Array,
  cfg: ml_collections.ConfigDict,
  temp: jax.Array,
  bias: jax.Array | None = None,
) -> jax.Array:
  """The contrastive term over the batch (`loss.contrastive`): InfoNCE, or the pairwise sigmoid loss at scale
  1 / T with the learned `bias`; by `loss.nce_impl`, blockwise (and sharded under the step's mesh) or dense."""
  emotions = {"video_emotion": batch["video_emotion"], "music_emotion": batch["music_emotion"]}
  if cfg.contrastive == "sigmoid":
    kw = dict(scale=1.0 / temp, bias=bias, mask=mask, emotion_positives=cfg.emotion_positives, **emotions)
    if cfg.nce_impl == "dense":
      return losses.sigmoid_contrastive_loss(zv, zm, **kw)
    return contrastive.sigmoid_contrastive_loss(zv, zm, block_rows=cfg.nce_block_rows, **kw)
  if cfg.nce_impl == "dense":
    return losses.info_nce_loss(
      zv, zm, temperature=temp, mask=mask, emotion_positives=cfg.emotion_positives, **emotions
    )
  return contrastive.info_nce_loss(
    zv,
    zm,
    temperature=temp,
    mask=mask,
    emotion_positives=cfg.emotion_positives,
    num_emotions=NUM_EMOTIONS,
    block_rows=cfg.nce_block_rows,
    **emotions,
  )


def generator_losses(
  outputs: dict[str, jax.Array],
  batch: Batch,
  *,
  disc_logits: tuple[jax.Array, jax.Array] | None,
  cfg: ml_collections.ConfigDict,
  temp: jax.Array,
  adv_weight: jax.Array | float,
  bias: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """The generator's loss terms and their weighted total `L_G` (docs/models.md, section 2.3)."""
  mask = batch["mask"]
  matched = jnp.logical_and(mask, batch["match"] == 1)
  zv, zm = outputs["video_embedding"], outputs["music_embedding"]
  terms = {
    "pair": losses.margin_contrastive_loss(zv, zm, batch["match"], margin=cfg.margin, mask=mask),
    "nce": info_nce(zv, zm, batch, mask=matched, cfg=cfg, temp=temp, bias=bias),
    "emo": 0.5
    * (
      losses.softmax_cross_entropy(outputs["video_emotion_logits"], batch["video_emotion"], mask=mask)
      + losses.softmax_cross_entropy(outputs["music_emotion_logits"], batch["music_emotion"], mask=mask)
    ),
    "match": losses.sigmoid_binary_cross_entropy(outputs["match_logit"], batch["match"], mask=mask),
  }
  supervised = (
    cfg.w_pair * terms["pair"] + cfg.w_nce * terms["nce"] + cfg.w_emo * terms["emo"] + cfg.w_match * terms["match"]
  )
  if cfg.w_va > 0:  # static, like w_gap: off, the program and the parameters are those of before the term
    va = jnp.asarray(VALENCE_AROUSAL)
    terms["va"] = 0.5 * (
      losses.squared_error_loss(outputs["video_va"], va[batch["video_emotion"]], mask=mask)
      + losses.squared_error_loss(outputs["music_va"], va[batch["music_emotion"]], mask=mask)
    )
    supervised = supervised + cfg.w_va * terms["va"]
  total = supervised
  if disc_logits is not None:
    terms["adv"] = losses.generator_adversarial_loss(*disc_logits, mode=cfg.adv_mode, mask=mask)
    total = total + adv_weight * terms["adv"]
  if cfg.w_gap > 0:  # a static choice: with the term off the step's program is what it was before the term existed
    terms["gap"] = losses.centroid_gap_loss(zv, zm, mask=mask)
    total = total + cfg.w_gap * terms["gap"]
  return total, supervised, terms


def adversarial_weight(step: jax.Array, cfg: ml_collections.ConfigDict) -> jax.Array:
  if cfg.adv_warmup_steps > 0:
    return cfg.w_adv * jnp.minimum(1.0, (step + 1) / cfg.adv_warmup_steps)
  return jnp.asarray(cfg.w_adv, jnp.float32)


ADV_CONDITIONS = ("none", "emotion", "prediction")


def _discriminator_input(
  outputs: dict[str, jax.Array], modality: str, *, batch: Batch, condition: str
) -> jax.Array | None:
  """What the discriminator sees besides an embedding (`loss.adv_condition`), or None.

  'none': nothing (it aligns the two marginal distributions); 'emotion': the one-hot emotion label of the row's
  clip of that modality (it aligns each emotion's music with the same emotion's video); 'prediction': the emotion
  head's probabilities, without their gradient (conditional alignment without labels, as in CDAN).
  """
  logits = outputs[f"{modality}_emotion_logits"]
  if condition == "none":
    return None
  if condition == "emotion":
    return jax.nn.one_hot(batch[f"{modality}_emotion"], logits.shape[-1], dtype=logits.dtype)
  return jax.lax.stop_gradient(jax.nn.softmax(logits, axis=-1))


def _with(z: jax.Array, condition: jax.Array | None) -> jax.Array:
  return z if condition is None else jnp.concatenate([z, condition.astype(z.dtype)], axis=-1)


def _discriminator_updates(
  state: TrainState,
  fake: dict[str, jax.Array],
  condition: Any,
  *,
  discriminator: nn.Module,
  opt_d: optax.GradientTransformation,
  loss_cfg: ml_collections.ConfigDict,
  n_disc: int,
  mask: jax.Array,
) -> tuple[Any, Any, jax.Array, tuple[jax.Array, jax.Array]]:
  """`n_disc` updates of D on (stop-gradient) embeddings: (params, optimiser state, last loss, last logits)."""
  zv, zm = fake["video_embedding"], fake["music_embedding"]
  cv, cm = condition(fake, "video"), condition(fake, "music")

  def d_loss_fn(d_params: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    lv = discriminator.apply({"params": d_params}, _with(zv, cv))
    lm = discriminator.apply({"params": d_params}, _with(zm, cm))
    loss = losses.discriminator_loss(lv, lm, mask=mask)
    if loss_cfg.r1_weight > 0:
      loss = loss + loss_cfg.r1_weight * losses.r1_penalty(
        lambda p, z: discriminator.apply({"params": p}, _with(z, cv)), d_params, zv, mask=mask
      )
    return loss, (lv, lm)

  d_params, d_opt_state = state.params["discriminator"], state.opt_state["discriminator"]
  for _ in range(n_disc):
    (d_loss, logits), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
    d_updates, d_opt_state = opt_d.update(d_grads, d_opt_state, d_params)
    d_params = optax.apply_updates(d_params, d_updates)
  return d_params, d_opt_state, d_loss, logits


def _microbatch(x: jax.Array, m: jax.Array | int, accum: int) -> jax.Array:
  """Rows `m, m + accum, m + 2 accum, ...` of `x`: every device's shard gives each microbatch its share of
  rows (a reshape of the leading axis that stays on the device), so microbatching moves no data."""
  return x.reshape(x.shape[0] // accum, accum, *x.shape[1:])[:, m]


def _unmicrobatch(x: jax.Array) -> jax.Array:
  """Inverse of stacking `_microbatch(x, m)` for m = 0 .. accum - 1: (accum, B / accum, ...) -> (B, ...)."""
  return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])


def running_centres(params: Any, step: jax.Array, momentum: float) -> tuple[jax.Array, jax.Array] | None:
  """The video and music embeddings' running means (`emvgan.centre`), bias-corrected as Adam's moments are
  (`ema / (1 - momentum^step)`; zero before the first step); None for a model without centring."""
  if "centring" not in params:
    return None
  correction = 1.0 - jnp.asarray(momentum, jnp.float32) ** jnp.asarray(step, jnp.float32)
  scale = jnp.where(step > 0, 1.0 / jnp.maximum(correction, 1e-12), 0.0)
  return params["centring"]["video"] * scale, params["centring"]["music"] * scale


def _moved_means(centring: Any, outputs: dict, mask: jax.Array, momentum: float) -> dict[str, jax.Array]:
  """The running means after one step: `m * mean + (1 - m) * this batch's mean of the uncentred embeddings`."""
  w = mask.astype(jnp.float32)[:, None]
  moved = {}
  for modality in ("video", "music"):
    z = jax.lax.stop_gradient(outputs[f"{modality}_uncentred"]).astype(jnp.float32)
    batch_mean = jnp.sum(w * z, axis=0) / jnp.maximum(jnp.sum(w), 1.0)
    moved[modality] = momentum * centring[modality] + (1.0 - momentum) * batch_mean
  return moved


def _generator_pass(
  generator: nn.Module,
  gen_params: Any,
  batch: Batch,
  key: jax.Array,
  *,
  clean: bool,
  accum: int,
  centres: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[dict, dict, Any]:
  """The generators' outputs on the batch, twice over when `clean` (with dropout, for the loss; without, for the
  adversarial game), and how to pull a gradient on them back to the parameters.

  With `accum == 1` that is one forward pass kept for its backward (`jax.vjp`): the discriminator's inputs and
  the generator's loss share it. With `accum > 1` the outputs are computed a microbatch at a time and nothing
  is kept; the pull-back runs each microbatch again and sums the parameters' gradients over them. Its result is
  the gradient of the one big batch (only dropout's masks differ: each microbatch draws its own), with the
  memory of one microbatch's activations; InfoNCE still sees the whole batch, since it is taken on the outputs
  (as GradCache does for contrastive losses).
  """

  def forward(params: Any, video: jax.Array, music: jax.Array, k: jax.Array) -> tuple[dict, dict]:
    def run(train: bool) -> dict:
      return generator.apply({"params": params}, video, music, train=train, centres=centres, rngs={"dropout": k})

    out = run(True)
    return out, (run(False) if clean else out)

  if accum == 1:
    (outputs, adv), pull = jax.vjp(lambda p: forward(p, batch["video"], batch["music"], key), gen_params)
    return outputs, adv, lambda cotangents: pull(cotangents)[0]

  def micro(params: Any, m: jax.Array) -> tuple[dict, dict]:
    video, music = _microbatch(batch["video"], m, accum), _microbatch(batch["music"], m, accum)
    return forward(params, video, music, jax.random.fold_in(key, m))

  outputs, adv = jax.tree.map(_unmicrobatch, jax.lax.map(lambda m: micro(gen_params, m), jnp.arange(accum)))

  def pull_back(cotangents: tuple[dict, dict]) -> Any:
    def one(grads: Any, m: jax.Array) -> tuple[Any, None]:
      _, pull = jax.vjp(lambda p: micro(p, m), gen_params)
      (g,) = pull(jax.tree.map(lambda d: _microbatch(d, m, accum), cotangents))
      return jax.tree.map(jnp.add, grads, g), None

    grads, _ = jax.lax.scan(one, jax.tree.map(jnp.zeros_like, gen_params), jnp.arange(accum))
    return grads

  return outputs, adv, pull_back


def _generator_update(
  state: TrainState, g_grads: dict, opt_g: optax.GradientTransformation, adv: dict, mask: jax.Array, momentum: float
) -> tuple[dict, Any]:
  """The generator side's parameters and optimiser state after one update with `g_grads` (which it completes with
  zeros for the running means, whose new values come from this step's embeddings `adv` instead)."""
  g_params = {k: v for k, v in state.params.items() if k != "discriminator"}
  if "centring" in g_params:  # 'frozen' for the optimiser
    g_grads = {**g_grads, "centring": jax.tree.map(jnp.zeros_like, g_params["centring"])}
  g_updates, g_opt_state = opt_g.update(g_grads, state.opt_state["generator"], g_params)
  g_params = optax.apply_updates(g_params, g_updates)
  if "centring" in g_params:  # from the embeddings retrieval uses (the clean pass, when there is one)
    g_params["centring"] = _moved_means(g_params["centring"], adv, mask, momentum)
  return g_params, g_opt_state


def _parameter_metrics(g_params: dict, g_grads: dict, d_params: Any) -> dict[str, jax.Array]:
  """The step's metrics of the parameters: temperature (and sigmoid bias), gradient and parameter norms."""
  return {
    "temperature": temperature(g_params),
    **({"sigmoid_bias": g_params["sigmoid"]["bias"]} if "sigmoid" in g_params else {}),
    "grad_norm": optax.tree.norm(g_grads),
    # A finite loss with a non-finite update (e.g. a huge learning rate) shows up here one step earlier.
    "param_norm": optax.tree.norm(g_params) + optax.tree.norm(d_params),
  }


def train_step(
  state: TrainState,
  batch: Batch,
  rng: jax.Array,
  *,
  generator: nn.Module,
  discriminator: nn.Module,
  opt_g: optax.GradientTransformation,
  opt_d: optax.GradientTransformation,
  loss_cfg: ml_collections.ConfigDict,
  n_disc: int,
  accum: int = 1,
  centre_momentum: float = 0.99,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """`n_disc` discriminator updates, then one generator update (its gradient in `accum` microbatches)."""
  rng = jax.random.fold_in(rng, state.step)
  g_rng, d_rng = jax.random.split(rng)
  mask = batch["mask"]
  del d_rng  # the discriminator has no dropout; kept split so adding some does not shift the generator's keys
  # What the adversarial game is played on: the embeddings of this step's dropout pass, or of a pass without
  # dropout (`loss.adv_inputs='clean'`), the embeddings that retrieval will use.
  centres = running_centres(state.params, state.step, centre_momentum)
  clean = loss_cfg.adv_inputs == "clean"
  outputs, adv, pull_back = _generator_pass(
    generator, state.params["generator"], batch, g_rng, clean=clean, accum=accum, centres=centres
  )

  # --- discriminator: learns to tell video embeddings (1) from music embeddings (0) ---------------------------
  # The embeddings it sees come from the generators before this step's generator update (the stop-gradient of
  # docs/models.md, section 2.4).
  fake = jax.lax.stop_gradient(adv)
  condition = functools.partial(_discriminator_input, batch=batch, condition=loss_cfg.adv_condition)
  d_params, d_opt_state, d_loss, (lv, lm) = _discriminator_updates(
    state, fake, condition, discriminator=discriminator, opt_d=opt_d, loss_cfg=loss_cfg, n_disc=n_disc, mask=mask
  )
  d_acc = losses.binary_accuracy_from_logits(lv, lm, mask=mask)

  # --- generators: fit the pair/emotion structure and fool the (just updated) discriminator ------------------
  adv_weight = adversarial_weight(state.step, loss_cfg)

  def loss_from_outputs(outs: dict, adv_outs: dict, temp_params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    disc_logits = (
      discriminator.apply({"params": d_params}, _with(adv_outs["video_embedding"], condition(adv_outs, "video"))),
      discriminator.apply({"params": d_params}, _with(adv_outs["music_embedding"], condition(adv_outs, "music"))),
    )
    total, _, terms = generator_losses(
      outs,
      batch,
      disc_logits=disc_logits,
      cfg=loss_cfg,
      temp=temperature(temp_params),
      adv_weight=adv_weight,
      bias=sigmoid_bias(temp_params),
    )
    return total, terms

  # The contrastive term's own parameters: the temperature, and the sigmoid loss's bias where it has one.
  temp_params = {k: v for k, v in state.params.items() if k in ("temperature", "sigmoid")}
  g_loss, pull_loss, terms = jax.vjp(loss_from_outputs, outputs, adv, temp_params, has_aux=True)
  d_outputs, d_adv, d_temp = pull_loss(jnp.ones_like(g_loss))
  g_grads = {"generator": pull_back((d_outputs, d_adv)), **d_temp}
  g_params, g_opt_state = _generator_update(state, g_grads, opt_g, adv, mask, centre_momentum)

  metrics = {
    "loss": g_loss,
    **{f"loss_{k}": v for k, v in terms.items()},
    "loss_disc": d_loss,
    "disc_accuracy": d_acc,
    "adv_weight": adv_weight,
    **_parameter_metrics(g_params, g_grads, d_params),
  }
  new_state = state.replace(
    step=state.step + 1,
    params={**g_params, "discriminator": d_params},
    opt_state={"generator": g_opt_state, "discriminator": d_opt_state},
  )
  return new_state, float32_metrics(metrics)


DECAY_MASKS = ("kernels", "all")


def decay_mask(params: Any, which: str = "kernels") -> Any:
  """Which leaves AdamW's decoupled weight decay shrinks: True for Dense kernels only ('kernels'), or for every
  leaf ('all').

  Decay is a prior that weights should be small; it has no such meaning for LayerNorm scales (pulled towards 0
  instead of 1), biases, the match calibration or a learned temperature (pulled towards T = 1).
  """
  if which not in DECAY_MASKS:
    raise ValueError(f"config.optim.decay_mask must be one of {DECAY_MASKS}, got {which!r}")

  def is_kernel(path: tuple[Any, ...], _: Any) -> bool:
    return which == "all" or getattr(path[-1], "key", None) == "kernel"

  return jax.tree_util.tree_map_with_path(is_kernel, params)


def optimizers(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, ...]:
  """(generator side, discriminator) optimisers. The temperature trains only when asked; else its update is 0."""
  o, lc = config.optim, config.loss
  # 'all' passes no mask at all: the optimiser state then has the layout of runs saved before the mask existed.
  mask = None if o.decay_mask == "all" else functools.partial(decay_mask, which=o.decay_mask)
  adamw_g = optax.adamw(o.learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay, mask=mask)
  labels = {"generator": "train", "temperature": "train" if lc.learn_temperature else "frozen"}
  if lc.contrastive == "sigmoid":  # its bias always learns, as SigLIP's does
    labels["sigmoid"] = "train"
  if config.emvgan.centre:  # running means, moved by the train step itself
    labels["centring"] = "frozen"
  opt_g = optax.multi_transform({"train": adamw_g, "frozen": optax.set_to_zero()}, labels)
  opt_d = optax.adamw(o.disc_learning_rate, b1=o.b1, b2=o.b2, weight_decay=o.disc_weight_decay, mask=mask)
  return opt_g, opt_d


def _check_options(config: ml_collections.ConfigDict) -> None:
  """The option fields that name a choice (ValueError naming the field and the choices)."""
  lc = config.loss
  if config.emvgan.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(
      f"config.emvgan.compute_dtype must be one of {COMPUTE_DTYPES}, got {config.emvgan.compute_dtype!r}"
    )
  if lc.adv_mode not in ADV_MODES:
    raise ValueError(f"config.loss.adv_mode must be one of {ADV_MODES}, got {lc.adv_mode!r}")
  if lc.adv_inputs not in ("train", "clean"):
    raise ValueError(f"config.loss.adv_inputs must be 'train' or 'clean', got {lc.adv_inputs!r}")
  if lc.contrastive not in CONTRASTIVE:
    raise ValueError(f"config.loss.contrastive must be one of {CONTRASTIVE}, got {lc.contrastive!r}")
  if lc.nce_impl not in NCE_IMPLS:
    raise ValueError(f"config.loss.nce_impl must be one of {NCE_IMPLS}, got {lc.nce_impl!r}")
  if lc.adv_condition not in ADV_CONDITIONS:
    raise ValueError(f"config.loss.adv_condition must be one of {ADV_CONDITIONS}, got {lc.adv_condition!r}")
  if config.optim.n_disc < 1:
    raise ValueError(f"config.optim.n_disc must be >= 1, got {config.optim.n_disc}")


def _embedders(generator: nn.Module, centre_momentum: float) -> tuple[Any, Any, Any]:
  """(embed_video, embed_music, emotion_probabilities) of a state: the generator side one part at a time."""

  def embed(state: TrainState, x: jax.Array, modality: str) -> jax.Array:
    centres = running_centres(state.params, state.step, centre_momentum)
    return generator.apply(
      {"params": state.params["generator"]},
      x,
      train=False,
      centre=None if centres is None else centres[0 if modality == "video" else 1],
      method=getattr(emvgan_lib.GeneratorSide, f"embed_{modality}"),
    )

  def embed_video(state: TrainState, video: jax.Array) -> jax.Array:
    return embed(state, video, "video")

  def embed_music(state: TrainState, music: jax.Array) -> jax.Array:
    return embed(state, music, "music")

  def emotion_probabilities(state: TrainState, z: jax.Array) -> jax.Array:
    return generator.apply(
      {"params": state.params["generator"]}, z, method=emvgan_lib.GeneratorSide.emotion_probabilities
    )

  return embed_video, embed_music, emotion_probabilities


def _initializer(
  generator: nn.Module,
  discriminator: nn.Module,
  opt_g: optax.GradientTransformation,
  opt_d: optax.GradientTransformation,
  config: ml_collections.ConfigDict,
) -> Any:
  """`init(rng, video_dim, music_dim) -> TrainState` of EMVGAN: the parameters and both optimisers' states."""
  e, lc = config.emvgan, config.loss

  def init(rng: jax.Array, video_dim: int, music_dim: int) -> TrainState:
    g_rng, d_rng, drop_rng = jax.random.split(rng, 3)
    video, music = dummy_inputs(video_dim, music_dim)
    g_params = generator.init({"params": g_rng, "dropout": drop_rng}, video, music, train=False)["params"]
    # A conditioned discriminator also sees one value per emotion class.
    d_width = e.embed_dim + (0 if lc.adv_condition == "none" else NUM_EMOTIONS)
    d_params = discriminator.init(d_rng, jnp.zeros((2, d_width), jnp.float32))["params"]
    gen_side = {"generator": g_params, "temperature": {"log_inv": jnp.asarray(-np.log(lc.temperature), jnp.float32)}}
    if lc.contrastive == "sigmoid":  # a static choice: with InfoNCE the state is what it was before this option
      gen_side["sigmoid"] = {"bias": jnp.asarray(lc.sigmoid_bias_init, jnp.float32)}
    if e.centre:  # likewise: off, no running means in the state
      gen_side["centring"] = {m: jnp.zeros((e.embed_dim,), jnp.float32) for m in ("video", "music")}
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params={**gen_side, "discriminator": d_params},
      constants={},
      opt_state={"generator": opt_g.init(gen_side), "discriminator": opt_d.init(d_params)},
    )

  return init


def build(config: ml_collections.ConfigDict) -> Family:
  """EMVGAN with the sizes of `config.emvgan`, the losses of `config.loss` and the optimisers of `config.optim`."""
  e, lc = config.emvgan, config.loss
  _check_options(config)
  dtype = jnp.dtype(e.compute_dtype)
  generator = emvgan_lib.GeneratorSide(
    hidden=e.hidden,
    embed_dim=e.embed_dim,
    dropout_rate=e.dropout_rate,
    valence_arousal=lc.w_va > 0,
    shared_top=e.shared_top,
    dtype=dtype,
  )
  discriminator = discriminator_lib.ModalityDiscriminator(hidden=e.disc_hidden, dtype=dtype)
  opt_g, opt_d = optimizers(config)

  init = _initializer(generator, discriminator, opt_g, opt_d, config)

  def predict(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
    outputs = generator.apply(
      {"params": state.params["generator"]},
      batch["video"],
      batch["music"],
      train=False,
      centres=running_centres(state.params, state.step, e.centre_momentum),
    )
    _, supervised, _ = generator_losses(
      outputs,
      batch,
      disc_logits=None,
      cfg=lc,
      temp=temperature(state.params),
      adv_weight=0.0,
      bias=sigmoid_bias(state.params),
    )
    return {
      "video_embedding": outputs["video_embedding"],
      "music_embedding": outputs["music_embedding"],
      "score": jax.nn.sigmoid(outputs["match_logit"]),
      "loss": supervised,
      "video_emotion_probs": jax.nn.softmax(outputs["video_emotion_logits"], axis=-1),
      "music_emotion_probs": jax.nn.softmax(outputs["music_emotion_logits"], axis=-1),
    }

  embed_video, embed_music, emotion_probabilities = _embedders(generator, e.centre_momentum)

  return Family(
    name="emvgan",
    model_name="emvgan",
    description="EMVGAN" if lc.w_adv > 0 else "EMVGAN (no adversarial term)",
    init=init,
    train_step=functools.partial(
      train_step,
      generator=generator,
      discriminator=discriminator,
      opt_g=opt_g,
      opt_d=opt_d,
      loss_cfg=lc,
      n_disc=config.optim.n_disc,
      accum=config.train.accumulation_steps,
      centre_momentum=e.centre_momentum,
    ),
    predict=predict,
    embed_video=embed_video,
    embed_music=embed_music,
    has_retrieval=True,
    score_is_probability=True,
    emotion_probabilities=emotion_probabilities,
  )
