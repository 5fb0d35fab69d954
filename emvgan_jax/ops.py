"""Array functions shared by the models, losses, metrics and search: one home, one definition each."""

from __future__ import annotations

from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

ArrayT = TypeVar("ArrayT", jax.Array, np.ndarray)

# torch.nn.functional.normalize's default: the EmoMV baselines normalise with it, and for any row whose norm is
# above it the result does not depend on it (a zero row maps to zero, so its cosines are 0, not NaN).
L2_EPS = 1e-12


def l2_normalize(x: ArrayT, *, axis: int = -1, eps: float = L2_EPS) -> ArrayT:
  """Scales `x` to unit L2 norm along `axis`: `x / max(||x||, eps)`.

  A jax array is normalised with `rsqrt` of the clamped squared norm: the clamp sits *inside* the square root,
  so a zero vector maps to zero with a finite gradient (sqrt'(0) is infinite, which would turn a single all-zero
  row into NaN parameters). A numpy array stays numpy, in its own dtype (the metrics work in float64).

  Args:
    x: array to normalise (jax or numpy).
    axis: axis holding the vector.
    eps: smallest norm divided by.

  Returns:
    The normalised array, same shape, dtype and array type as `x`.
  """
  if isinstance(x, np.ndarray):
    return x / np.sqrt(np.maximum(np.sum(np.square(x), axis=axis, keepdims=True), eps * eps))
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def cosine_rows(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine of each row of `a` with the same row of `b`: (B, D), (B, D) -> (B,)."""
  return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def non_finite_rows(rows: np.ndarray) -> np.ndarray:
  """Indices of the rows of a (N, D) array that hold a NaN or an infinite value."""
  return np.flatnonzero(~np.isfinite(rows).all(axis=1))
