"""VGGish (Hershey et al. 2017, the AudioSet embedding network) in Flax, and its converter from torchvggish.

The network of the published model: four VGG blocks of 3x3 convolutions with ReLU (64; 128; 256, 256;
512, 512 channels), each followed by a 2x2 max pool, on a (96 frames, 64 mel bands) patch; flattened in
(time, mel, channel) order, then three fully connected layers (4096, 4096, 128), each with a ReLU. The output
is the raw 128-d embedding; the PCA and 8-bit quantisation of the TensorFlow release are not applied (EmoMV's
VGGish vectors are non-negative floats up to about 4.6, which only this output gives; docs/data.md).

Parameter names mirror torchvggish's `VGG` (`features.<i>`, `embeddings.<i>`): `convert` maps its state dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # torchvggish's make_layers, in order
EMBEDDING_DIM = 128


class VGGish(nn.Module):
  """(N, 96, 64) log-mel patches -> (N, 128) embeddings."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x[..., None]
    index = 0  # the index of the layer in torchvggish's `features` Sequential (ReLUs count)
    for layer in _LAYERS:
      if layer == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        index += 1
      else:
        x = nn.relu(nn.Conv(layer, (3, 3), padding=((1, 1), (1, 1)), name=f"features_{index}")(x))
        index += 2
    x = x.reshape(x.shape[0], -1)  # (time, mel, channel) order, as torchvggish transposes before flattening
    for index, width in ((0, 4096), (2, 4096), (4, EMBEDDING_DIM)):
      x = nn.relu(nn.Dense(width, name=f"embeddings_{index}")(x))
    return x


def example_inputs() -> tuple[np.ndarray]:
  """Inputs of the network's shape (one patch), for `init` and shape checks."""
  return (np.zeros((1, 96, 64), np.float32),)


def convert(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Flax variables of `VGGish` from torchvggish's state dict (arrays or tensors; `pproc.*` is ignored).

  Raises:
    ValueError: a key of the model is missing from `state_dict`, or has another shape.
  """
  params: dict[str, Any] = {}
  for key, value in state_dict.items():
    if key.startswith("pproc"):
      continue
    layer, leaf = key.rsplit(".", 1)
    value = np.asarray(value, np.float32)
    if leaf == "weight":
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T  # OIHW -> HWIO; (out, in) -> (in, out)
    params.setdefault(layer.replace(".", "_"), {})["kernel" if leaf == "weight" else "bias"] = value
  variables = {"params": params}
  check_fits(variables, VGGish(), *example_inputs())
  return variables


def check_fits(variables: Mapping[str, Any], model: nn.Module, *example_inputs: np.ndarray) -> None:
  """Raises ValueError, naming the first differences, unless `variables` has exactly the model's leaves and
  shapes (a converted state dict of another architecture must not load half-way)."""

  expected = jax.eval_shape(model.init, jax.random.key(0), *example_inputs)
  want = {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(expected)).items()}
  got = {"/".join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(dict(variables)).items()}
  problems = [f"{k}: {got[k]} instead of {want[k]}" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
  problems += [f"missing {k}" for k in sorted(set(want) - set(got))]
  problems += [f"unexpected {k}" for k in sorted(set(got) - set(want))]
  if problems:
    raise ValueError(f"the weights do not fit {type(model).__name__}: " + "; ".join(problems[:5]))
