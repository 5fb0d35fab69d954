"""What every model family provides: its `TrainState` layout and the `Family` record the trainer and tools use.

A family bundles one model's modules, optimisers, initial state, train step and predict step, built from the
config by the family's `build(config)` (families/__init__.py maps `config.model` to it). The training loop and
the evaluation tools only ever talk to a `Family`; nothing outside `families/` branches on `config.model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp

# A batch: global arrays `video`, `music`, `match`, `video_emotion`, `music_emotion` and the boolean `mask`.
Batch = dict[str, jax.Array]


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


@dataclasses.dataclass(frozen=True)
class Family:
  """What the trainer and the evaluation tools need to know about one model family.

  Attributes:
    name: the key of `config.model` ('emvgan' or 'baseline').
    model_name: the `model` of results.json, e.g. 'emvgan' or 'baseline_retrieval_multi'.
    description: a human-readable name for tables, e.g. 'EmoMV baseline (retrieval, multi-task)'.
    init: (rng, video_dim, music_dim) -> TrainState (pure; jit it with out_shardings).
    train_step: (state, batch, rng) -> (state, metrics) (pure; jit it).
    predict: (state, batch) -> dict of per-row 'video_embedding', 'music_embedding', 'score', and the scalar
      'loss' (mean over valid rows), the model selection loss.
    embed_video, embed_music: (state, features) -> common-space vectors (for galleries and queries).
    has_retrieval: whether the model is trained to embed for retrieval.
    score_is_probability: whether 'score' is p(matched) (threshold 0.5) or a cosine (threshold chosen on train).
    fixed_data_order: every epoch uses the data order of epoch 0 (the published baselines' RNG quirk).
    emotion_probabilities: (state, common-space vectors) -> p(emotion | z) from the model's emotion head, for
      emotion-aware ranking (`evaluation/affect.py`); None for a model without one.
  """

  name: str
  model_name: str
  description: str
  init: Callable[..., TrainState]
  train_step: Callable[..., Any]
  predict: Callable[..., dict[str, jax.Array]]
  embed_video: Callable[..., jax.Array]
  embed_music: Callable[..., jax.Array]
  has_retrieval: bool
  score_is_probability: bool
  fixed_data_order: bool = False
  emotion_probabilities: Callable[..., jax.Array] | None = None


def dummy_inputs(video_dim: int, music_dim: int) -> tuple[jax.Array, jax.Array]:
  """Two rows of zeros of each modality: the example inputs `init` traces the modules with."""
  return jnp.zeros((2, video_dim), jnp.float32), jnp.zeros((2, music_dim), jnp.float32)


def float32_metrics(metrics: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Step metrics as float32 scalars (one dtype for the logger, whatever a term was computed in)."""
  return {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
