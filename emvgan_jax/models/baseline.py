"""The EmoMV benchmark models (all four published variants), reproduced for parity.

Branch inputs `Dense(video -> 64)` and `Dense(music -> 64)` (no activation) feed one `ProjectionHead` per
modality. Classification pools the two head outputs with compact bilinear pooling and scores match /
mismatch with `Dense(2)(gelu(Dense(32)(z)))`; retrieval adds LayerNorm to the heads and scores pairs by
cosine. The multi-task variants add an emotion `Dense(5)` per modality: on the head outputs for
classification, on the branch inputs (before the heads) for retrieval, as in the published code.

All Dense layers use PyTorch's default init (see layers.py). Parameter counts at EmoMV's sizes
(video 2304, music 128): classification 173,538 / 174,188 (multi-task); retrieval 172,672 / 173,322.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from emvgan_jax.models.cbp import CompactBilinearPooling
from emvgan_jax.models.layers import ProjectionHead, TorchDense, gelu

TASKS = ("classification", "retrieval")


class EmoMVBaseline(nn.Module):
  """One of the four EmoMV benchmark models.

  Variables: 'params' (learned) and, for classification, 'constants' (the CBP hashes and signs). Dropout
  draws from the rng stream 'dropout'.

  Attributes:
    task: 'classification' or 'retrieval'.
    multitask: Adds the per-modality emotion heads.
    hidden: Width of the branch inputs and projection heads (64).
    cbp_dim: Compact bilinear pooling output width (32).
    num_emotions: Emotion classes for the multi-task heads (5).
    dropout_rate: Dropout inside the projection heads (0.5).
  """

  task: str
  multitask: bool = False
  hidden: int = 64
  cbp_dim: int = 32
  num_emotions: int = 5
  dropout_rate: float = 0.5

  @nn.compact
  def __call__(self, video: jax.Array, music: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Scores video/music pairs.

    Args:
      video: `(B, video_dim)` standardised video features.
      music: `(B, music_dim)` standardised music features.
      train: Enables dropout.

    Returns:
      Always 'video_embedding' and 'music_embedding' (the `(B, hidden)` unit-norm head outputs).
      Classification adds 'match_logits' `(B, 2)` (index 1 = matched); retrieval adds 'score' `(B,)`, the
      cosine similarity. Multi-task adds 'video_emotion_logits' and 'music_emotion_logits' `(B, K)`.
    """
    if self.task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
    retrieval = self.task == "retrieval"

    video_in = TorchDense(self.hidden, name="video_fc")(video)
    music_in = TorchDense(self.hidden, name="music_fc")(music)
    v = ProjectionHead(self.hidden, self.dropout_rate, layer_norm=retrieval, name="video_head")(video_in, train=train)
    a = ProjectionHead(self.hidden, self.dropout_rate, layer_norm=retrieval, name="music_head")(music_in, train=train)
    out = {"video_embedding": v, "music_embedding": a}

    if retrieval:
      # Both embeddings are unit-norm already, so the dot product is the cosine.
      out["score"] = jnp.sum(v * a, axis=-1)
      emotion_inputs = (video_in, music_in)
    else:
      z = CompactBilinearPooling(self.cbp_dim, name="cbp")(v, a)
      h = gelu(TorchDense(self.cbp_dim, name="match_fc")(z))
      out["match_logits"] = TorchDense(2, name="match_out")(h)
      emotion_inputs = (v, a)

    if self.multitask:
      video_feat, music_feat = emotion_inputs
      out["video_emotion_logits"] = TorchDense(self.num_emotions, name="video_emotion")(gelu(video_feat))
      out["music_emotion_logits"] = TorchDense(self.num_emotions, name="music_emotion")(gelu(music_feat))
    return out
