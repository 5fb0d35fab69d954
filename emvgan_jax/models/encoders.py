"""EMVGAN's per-modality encoders `E_music`, `E_video`: pretrained emotion features -> hidden features.

`Dense(h) -> LayerNorm -> GELU -> Dropout -> Dense(h) -> GELU` (docs/models.md, section 2). The input width
is read from the input, so the same module serves VGGish (128) and SlowFast (2304) features.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emvgan_jax.models.layers import gelu


class Encoder(nn.Module):
  """Two-layer MLP encoder for one modality.

  Attributes:
    hidden: Width of both layers (h = 256 by default).
    dropout_rate: Dropout after the first layer (rng stream 'dropout').
    dtype: The computation's dtype (bfloat16 for mixed precision); parameters stay float32.
  """

  hidden: int = 256
  dropout_rate: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Encodes `(..., in_dim)` features to `(..., hidden)`.

    Args:
      x: Standardised input features.
      train: Enables dropout.

    Returns:
      The `(..., hidden)` hidden features.
    """
    h = nn.Dense(self.hidden, dtype=self.dtype, name="dense_in")(x)
    h = gelu(nn.LayerNorm(dtype=self.dtype, name="layer_norm")(h))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    return gelu(nn.Dense(self.hidden, dtype=self.dtype, name="dense_out")(h))
