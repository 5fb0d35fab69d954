"""Compact bilinear pooling (Tensor Sketch; Gao et al., CVPR 2016), as used by the EmoMV classifiers.

Each input is count-sketched with fixed random hashes and signs, and the two sketches are circularly
convolved through the FFT; the result is the count sketch of the outer product `x y^T` (Pham & Pagh, 2013)
without ever forming it. As in the EmoMV benchmark there is no signed square root and no normalisation after.

The hashes and signs are drawn once at init and are not learned, so they live in the 'constants' variable
collection: they travel with the checkpoint but the optimizer, which only sees 'params', never touches them.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

CONSTANTS = "constants"


def count_sketch(x: jax.Array, hashes: jax.Array, signs: jax.Array, output_dim: int) -> jax.Array:
  """Count sketch of the last axis of `x`: `out[..., j] = sum_{i: hashes[i] = j} signs[i] x[..., i]`.

  Args:
    x: `(..., n)` input.
    hashes: `(n,)` integer buckets in `[0, output_dim)`.
    signs: `(n,)` values in {-1, +1}.
    output_dim: Sketch width.

  Returns:
    The `(..., output_dim)` sketch.
  """
  signed = jnp.moveaxis(x * signs.astype(x.dtype), -1, 0)
  # A segment sum (exact scatter-add) rather than a matmul with the one-hot hash matrix: the matmul would
  # run at reduced precision on TPU/GPU by default.
  sketch = jax.ops.segment_sum(signed, hashes, num_segments=output_dim)
  return jnp.moveaxis(sketch, 0, -1)


def compact_bilinear_pooling(
  x: jax.Array,
  y: jax.Array,
  *,
  x_hashes: jax.Array,
  x_signs: jax.Array,
  y_hashes: jax.Array,
  y_signs: jax.Array,
  output_dim: int,
) -> jax.Array:
  """Tensor Sketch of `x (x) y`: `irfft(rfft(sketch(x)) * rfft(sketch(y)), n=output_dim)`.

  Args:
    x: `(..., n)` first input.
    y: `(..., m)` second input (same leading shape).
    x_hashes: `(n,)` buckets for `x`.
    x_signs: `(n,)` signs for `x`.
    y_hashes: `(m,)` buckets for `y`.
    y_signs: `(m,)` signs for `y`.
    output_dim: Output width.

  Returns:
    The `(..., output_dim)` pooled feature.
  """
  sketch_x = count_sketch(x, x_hashes, x_signs, output_dim)
  sketch_y = count_sketch(y, y_hashes, y_signs, output_dim)
  product = jnp.fft.rfft(sketch_x, axis=-1) * jnp.fft.rfft(sketch_y, axis=-1)
  return jnp.fft.irfft(product, n=output_dim, axis=-1).astype(x.dtype)


class CompactBilinearPooling(nn.Module):
  """Compact bilinear pooling with hashes and signs fixed at init (collection 'constants').

  The hashes and signs are drawn from the 'params' init rng, so the same seed gives the same sketch. At
  apply time they are read from the 'constants' collection, which must be passed with 'params'.

  Attributes:
    output_dim: Output width (32 in EmoMV).
  """

  output_dim: int = 32

  def _sketch_constants(self, prefix: str, width: int) -> tuple[jax.Array, jax.Array]:
    # The init functions are lambdas so that make_rng runs only when the constants are created (at init);
    # at apply time there is no 'params' rng to draw from.
    hashes = self.variable(
      CONSTANTS,
      f"{prefix}_hashes",
      lambda: jax.random.randint(self.make_rng("params"), (width,), 0, self.output_dim, jnp.int32),
    ).value
    signs = self.variable(
      CONSTANTS,
      f"{prefix}_signs",
      lambda: jax.random.rademacher(self.make_rng("params"), (width,), jnp.float32),
    ).value
    return hashes, signs

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """Pools `(..., n)` and `(..., m)` inputs into `(..., output_dim)`."""
    x_hashes, x_signs = self._sketch_constants("x", x.shape[-1])
    y_hashes, y_signs = self._sketch_constants("y", y.shape[-1])
    return compact_bilinear_pooling(
      x,
      y,
      x_hashes=x_hashes,
      x_signs=x_signs,
      y_hashes=y_hashes,
      y_signs=y_signs,
      output_dim=self.output_dim,
    )
