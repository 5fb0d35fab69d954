"""EMVGAN's generator side: everything the generator optimizer trains.

Encoders `E_video`, `E_music` and generators `G_video`, `G_music` map each modality into the common
affective space; one emotion head `C` (a single Dense, the same parameters for both modalities, so the
emotion classes occupy the same regions of the space whichever modality lands there); and the match
calibration `p(matched) = sigmoid(a * cos(z_video, z_music) + b)` that lets the same model answer the binary
classification task. Optionally (`valence_arousal`) a second shared head, a Dense to 2 values, regresses each
embedding's emotion's valence-arousal coordinates (`data.emomv.VALENCE_AROUSAL`).
The discriminator is separate (discriminator.py) with its own optimizer.

The module uses `setup` rather than `nn.compact` because `embed_video` / `embed_music` must reach the same
submodules as `__call__` (retrieval embeds a gallery one modality at a time), and linen allows only one
compact method per module.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emvgan_jax.models.encoders import Encoder
from emvgan_jax.models.generators import Generator, GeneratorTop
from emvgan_jax.ops import l2_normalize


def _centred(z: jax.Array, centre: jax.Array | None) -> jax.Array:
  """`z` moved by minus its modality's running mean and normalised again (the direct fix of the "modality gap"
  of Liang et al., NeurIPS 2022, applied in training as well as after it); `z` itself without a centre."""
  return z if centre is None else l2_normalize(z - jax.lax.stop_gradient(centre).astype(z.dtype))


class GeneratorSide(nn.Module):
  """Encoders, generators, shared emotion head and match calibration of EMVGAN.

  Use `model.apply(variables, video, train=..., method='embed_video')` (or 'embed_music') to embed one
  modality. Dropout draws from the rng stream 'dropout'. Only a 'params' collection.

  Attributes:
    hidden: Encoder width h.
    embed_dim: Common-space width d.
    num_emotions: Emotion head width K (2 for a valence-arousal regression head).
    dropout_rate: Encoder dropout.
    match_scale_init: Initial calibration slope a; cosines lie in [-1, 1], so a slope well above 1 is
      needed for confident match probabilities.
    match_bias_init: Initial calibration offset b.
    valence_arousal: Adds the shared valence-arousal head (outputs 'video_va', 'music_va'). Off, the
      parameters are exactly those of a model without it.
    shared_top: The two generators share their layers after the projection (`GeneratorTop`): alignment by
      construction. Off, the parameters are exactly those of a model without the option.
    dtype: The encoders' and generators' computation dtype (bfloat16: mixed precision). Parameters are
      float32 whatever it is, and the embeddings and every head work in float32.
  """

  hidden: int = 256
  embed_dim: int = 64
  num_emotions: int = 5
  dropout_rate: float = 0.1
  match_scale_init: float = 5.0
  match_bias_init: float = 0.0
  valence_arousal: bool = False
  shared_top: bool = False
  dtype: Any = jnp.float32

  def setup(self) -> None:
    self.video_encoder = Encoder(self.hidden, self.dropout_rate, dtype=self.dtype)
    self.music_encoder = Encoder(self.hidden, self.dropout_rate, dtype=self.dtype)
    top = None
    if self.shared_top:  # one instance, the parent's, used by both generators: its parameters exist once
      self.generator_top = top = GeneratorTop(self.embed_dim, dtype=self.dtype)
    self.video_generator = Generator(self.embed_dim, dtype=self.dtype, top=top)
    self.music_generator = Generator(self.embed_dim, dtype=self.dtype, top=top)
    self.emotion_head = nn.Dense(self.num_emotions)
    self.match_scale = self.param("match_scale", nn.initializers.constant(self.match_scale_init), ())
    self.match_bias = self.param("match_bias", nn.initializers.constant(self.match_bias_init), ())
    if self.valence_arousal:
      self.va_head = nn.Dense(2)

  def embed_video(self, video: jax.Array, *, train: bool, centre: jax.Array | None = None) -> jax.Array:
    """`z_video = G_video(E_video(video))`, `(B, d)` and unit-norm.

    Args:
      video: `(B, video_dim)` standardised video features.
      train: Enables dropout.
      centre: `(d,)` the video embeddings' running mean (`emvgan.centre`): z is `l2_normalize(z - centre)`.

    Returns:
      The video embeddings.
    """
    return _centred(self.video_generator(self.video_encoder(video, train=train)), centre)

  def embed_music(self, music: jax.Array, *, train: bool, centre: jax.Array | None = None) -> jax.Array:
    """`z_music = G_music(E_music(music))`, `(B, d)` and unit-norm.

    Args:
      music: `(B, music_dim)` standardised music features.
      train: Enables dropout.
      centre: `(d,)` the music embeddings' running mean (`emvgan.centre`), as for `embed_video`.

    Returns:
      The music embeddings.
    """
    return _centred(self.music_generator(self.music_encoder(music, train=train)), centre)

  def emotion_probabilities(self, z: jax.Array) -> jax.Array:
    """`p(e | z)`, the shared emotion head's softmax on common-space vectors of either modality, `(B, K)`."""
    return jax.nn.softmax(self.emotion_head(z), axis=-1)

  def __call__(
    self, video: jax.Array, music: jax.Array, *, train: bool, centres: tuple[jax.Array, jax.Array] | None = None
  ) -> dict[str, jax.Array]:
    """Embeds both modalities and scores each row's pair.

    Args:
      video: `(B, video_dim)` standardised video features.
      music: `(B, music_dim)` standardised music features.
      train: Enables dropout.
      centres: `(d,)` running means of the video and of the music embeddings (`emvgan.centre`); each modality's
        embedding is then `l2_normalize(z - its centre)`, and the uncentred ones are returned too.

    Returns:
      'video_embedding', 'music_embedding' `(B, d)` unit-norm; 'video_emotion_logits',
      'music_emotion_logits' `(B, K)` from the shared head; 'score' `(B,)` cosine of each row's pair;
      'match_logit' `(B,)` = a * score + b; with `centres`, 'video_uncentred' and 'music_uncentred' `(B, d)`.
    """
    out = {}
    z_video = self.embed_video(video, train=train)
    z_music = self.embed_music(music, train=train)
    if centres is not None:
      out = {"video_uncentred": z_video, "music_uncentred": z_music}
      z_video, z_music = _centred(z_video, centres[0]), _centred(z_music, centres[1])
    # Both embeddings are unit-norm, so the dot product is the cosine.
    score = jnp.sum(z_video * z_music, axis=-1)
    if self.valence_arousal:
      out.update(video_va=self.va_head(z_video), music_va=self.va_head(z_music))
    return {
      **out,
      "video_embedding": z_video,
      "music_embedding": z_music,
      "video_emotion_logits": self.emotion_head(z_video),
      "music_emotion_logits": self.emotion_head(z_music),
      "score": score,
      "match_logit": self.match_scale * score + self.match_bias,
    }
