"""Shared building blocks: PyTorch-default Dense, safe L2 normalisation and the EmoMV projection head.

The EmoMV benchmark code is PyTorch, and its `nn.Linear` layers keep PyTorch's default initialisation:
weights and biases uniform in +-1/sqrt(fan_in). Flax's `nn.Dense` draws the kernel from LeCun normal and
zeroes the bias, so parity with the published numbers needs the initialisers below.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emvgan_jax.ops import l2_normalize

Initializer = Callable[..., jax.Array]

# PyTorch's LayerNorm default; flax's is 1e-6. Kept for parity in the EmoMV heads.
TORCH_LAYER_NORM_EPS = 1e-5


def gelu(x: jax.Array) -> jax.Array:
  """GELU, tanh approximation (the form both model families use, see docs/models.md)."""
  return jax.nn.gelu(x, approximate=True)


def torch_kernel_init() -> Initializer:
  """PyTorch's default `nn.Linear` weight init: uniform in +-1/sqrt(fan_in).

  PyTorch uses kaiming_uniform with a=sqrt(5), whose bound works out to exactly 1/sqrt(fan_in); a
  variance-scaling uniform with scale 1/3 has bound sqrt(3 * (1/3) / fan_in), the same number.

  Returns:
    A flax kernel initialiser for `(fan_in, fan_out)` kernels.
  """
  return jax.nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Initializer:
  """PyTorch's default `nn.Linear` bias init: uniform in +-1/sqrt(fan_in).

  Flax bias initialisers only see the bias shape, not the layer's fan-in, so the fan-in is bound here.

  Args:
    fan_in: Input width of the layer the bias belongs to.

  Returns:
    A flax bias initialiser.
  """
  bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

  return init


class TorchDense(nn.Module):
  """Dense layer with PyTorch's default `nn.Linear` initialisation.

  Same parameter names and shapes as `nn.Dense` ('kernel' `(fan_in, features)`, 'bias' `(features,)`), so
  checkpoints and parameter counts read the same; only the initial values differ.

  Attributes:
    features: Output width.
    use_bias: Whether to add a bias.
    param_dtype: Dtype of the parameters.
  """

  features: int
  use_bias: bool = True
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies `x @ kernel + bias` over the last axis of `x`."""
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_kernel_init(), (fan_in, self.features), self.param_dtype)
    y = jnp.dot(x, kernel.astype(x.dtype))
    if self.use_bias:
      bias = self.param("bias", torch_bias_init(fan_in), (self.features,), self.param_dtype)
      y = y + bias.astype(x.dtype)
    return y


class ProjectionHead(nn.Module):
  """The EmoMV projection head, reproduced from the published benchmark code.

  `p = Dense(x); h = Dense(gelu(p)); h = gelu(dropout(h)); h = h + p; [LayerNorm(h)];
  out = l2_normalize(gelu(h))`. The classification models use it without the LayerNorm, the retrieval
  models with it.

  Attributes:
    features: Width of both Dense layers and of the output (64 in EmoMV).
    dropout_rate: Dropout after the second Dense (0.5 in EmoMV).
    layer_norm: Whether to apply the LayerNorm (the retrieval variant).
  """

  features: int = 64
  dropout_rate: float = 0.5
  layer_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Projects `x` to a unit-norm `(..., features)` embedding.

    Args:
      x: `(..., fan_in)` input.
      train: Enables dropout (rng stream 'dropout').

    Returns:
      The L2-normalised `(..., features)` embedding.
    """
    projected = TorchDense(self.features, name="projection")(x)
    h = TorchDense(self.features, name="fc")(gelu(projected))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    h = gelu(h) + projected
    if self.layer_norm:
      h = nn.LayerNorm(epsilon=TORCH_LAYER_NORM_EPS, name="layer_norm")(h)
    return l2_normalize(gelu(h))


def count_params(params: Mapping[str, Any]) -> int:
  """Number of scalars in a parameter pytree (pass the 'params' collection only).

  Args:
    params: Pytree of arrays.

  Returns:
    Total element count.
  """
  return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
