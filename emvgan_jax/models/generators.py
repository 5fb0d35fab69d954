"""EMVGAN's per-modality generators `G_music`, `G_video`: hidden features -> the common affective space.

A residual projection to the common width d, then LayerNorm, then L2 normalisation:

  p = Dense(d)(x)                    # linear projection into the common space
  r = Dense(d)(gelu(Dense(d)(p)))    # a small non-linear correction, computed in that space
  z = l2_normalize(LayerNorm(p + r))

The linear path `p` keeps a direct, easily trained map from the encoder to the space, so the adversarial
term only has to learn the residual `r` that aligns the two modalities. LayerNorm centres and rescales every
embedding before normalisation so no few dimensions dominate the cosine; unit norm makes cosine similarity a
dot product and bounds the discriminator's input.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emvgan_jax.models.layers import gelu
from emvgan_jax.ops import l2_normalize


def _top(p: jax.Array, embed_dim: int, dtype: Any) -> jax.Array:
  """`z = l2_normalize(LayerNorm(p + r(p)))`, its layers created in the calling module (inside an `nn.compact`
  method), under the names a generator's layers have always had."""
  dense = functools.partial(nn.Dense, embed_dim, dtype=dtype)
  r = dense(name="residual_out")(gelu(dense(name="residual_in")(p)))
  h = nn.LayerNorm(dtype=dtype, name="layer_norm")(p + r)
  return l2_normalize(h.astype(jnp.float32))


class GeneratorTop(nn.Module):
  """The part of a generator after its projection, as a module of its own: one instance for both modalities
  (`emvgan.shared_top`), as ACMR shares its top layers (Wang et al., ACM MM 2017)."""

  embed_dim: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, p: jax.Array) -> jax.Array:
    return _top(p, self.embed_dim, self.dtype)


class Generator(nn.Module):
  """Residual projection of one modality into the common space.

  Attributes:
    embed_dim: Width d of the common space (64 by default).
    dtype: The computation's dtype; the embeddings are returned in float32 whatever it is.
    top: a `GeneratorTop` shared with the other modality's generator; None: this generator's own (its layers
      then sit in this module, named as they always were).
  """

  embed_dim: int = 64
  dtype: Any = jnp.float32
  top: nn.Module | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps `(..., hidden)` features to unit-norm `(..., embed_dim)` embeddings.

    Args:
      x: Encoder output.

    Returns:
      The L2-normalised embedding `z`.
    """
    p = nn.Dense(self.embed_dim, dtype=self.dtype, name="projection")(x)
    return self.top(p) if self.top is not None else _top(p, self.embed_dim, self.dtype)
