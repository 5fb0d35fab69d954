"""EMVGAN's modality discriminator `D`: tells from an embedding which modality it came from.

`Dense(h_d) -> LeakyReLU(0.2)` twice, then `Dense(1)`; the output is the logit that `z` is a video embedding
(docs/models.md, section 2). With `h_d = 0` it is `Dense(1)` alone: a linear discriminator, the model class of
the modality probe of `evaluation/alignment.py`. It has its own parameter tree and optimizer, separate from the
generator side.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ModalityDiscriminator(nn.Module):
  """MLP discriminator on common-space embeddings.

  Attributes:
    hidden: Width h_d of the two hidden layers; 0 makes the discriminator linear.
    dtype: The computation's dtype; the logits are returned in float32.
  """

  hidden: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """Scores embeddings.

    Args:
      z: `(B, d)` embeddings (either modality).

    Returns:
      `(B,)` logits that each row came from video.
    """
    h = z
    if self.hidden > 0:
      h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense_0")(h), negative_slope=0.2)
      h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype, name="dense_1")(h), negative_slope=0.2)
    return jnp.squeeze(nn.Dense(1, dtype=self.dtype, name="logit")(h), axis=-1).astype(jnp.float32)
