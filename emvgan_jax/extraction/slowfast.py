"""SlowFast R50 (Feichtenhofer et al. 2019, 8x8, Kinetics-400) in Flax, and its converter from PyTorchVideo.

The architecture of PyTorchVideo's `create_slowfast()` defaults (the model of its Kinetics-400 checkpoint
`SLOWFAST_8x8_R50`): a slow pathway of 8 frames and a fast pathway of alpha = 4 times as many (32) with beta =
1/8 of the channels. Stems: 1x7x7 (slow, 64 channels) and 5x7x7 (fast, 8) convolutions, stride 2 in space,
then a 1x3x3 max pool of stride 2. Four ResNet-50 stages of (3, 4, 6, 3) bottleneck blocks, spatial stride 2 at
the start of stages 2-4; the slow pathway's first 1x1x1 convolutions become 3x1x1 only in stages 3 and 4, the
fast pathway's are 3x1x1 throughout. After the stem and each of the first three stages the fast pathway is fused
into the slow one: a 7x1x1 convolution of temporal stride alpha with twice the fast channels, BatchNorm, ReLU,
concatenated after the slow channels. The output is each pathway's last stage averaged over time and space,
slow (2048) then fast (256) = 2304 values, non-negative (after ReLU); the classifier is not used. At a 224 crop
that is exactly what PyTorchVideo's head pools; at 256 its fixed 8x7x7 average pool and output pool weigh the
border positions less than a plain mean does. BatchNorm runs on its stored statistics (inference).

Module names mirror the PyTorch state dict (`blocks.1.multipathway_blocks.0.res_blocks.2.branch2.conv_a` is
`blocks_1_multipathway_blocks_0_res_blocks_2/branch2_conv_a`), so `convert` is a renaming and a transpose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emvgan_jax.extraction.vggish import check_fits

ALPHA = 4  # fast frames per slow frame
SLOW_FRAMES, FAST_FRAMES = 8, 32
DEPTHS = (3, 4, 6, 3)
SLOW_INNER = (64, 128, 256, 512)  # bottleneck widths; outputs are 4x
FAST_INNER = (8, 16, 32, 64)
SLOW_TEMPORAL = (1, 1, 3, 3)  # temporal kernel of conv_a, per stage
FAST_TEMPORAL = (3, 3, 3, 3)
FEATURE_DIM = 4 * SLOW_INNER[-1] + 4 * FAST_INNER[-1]  # 2048 + 256


def _conv(features: int, kernel: Sequence[int], stride: Sequence[int], name: str) -> nn.Conv:
  padding = [(k // 2, k // 2) for k in kernel]
  return nn.Conv(features, tuple(kernel), strides=tuple(stride), padding=padding, use_bias=False, name=name)


def _norm(name: str) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, momentum=0.9, name=name)


class ResBlock(nn.Module):
  """Bottleneck: Tx1x1 -> 1x3x3 (spatial stride) -> 1x1x1, each with BatchNorm; ReLU after the sum."""

  inner: int
  temporal: int
  stride: int
  project: bool  # a 1x1x1 convolution on the shortcut (the first block of a stage)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shortcut = x
    if self.project:
      shortcut = _norm("branch1_norm")(
        _conv(4 * self.inner, (1, 1, 1), (1, self.stride, self.stride), "branch1_conv")(x)
      )
    y = nn.relu(_norm("branch2_norm_a")(_conv(self.inner, (self.temporal, 1, 1), (1, 1, 1), "branch2_conv_a")(x)))
    y = _conv(self.inner, (1, 3, 3), (1, self.stride, self.stride), "branch2_conv_b")(y)
    y = nn.relu(_norm("branch2_norm_b")(y))
    y = _norm("branch2_norm_c")(_conv(4 * self.inner, (1, 1, 1), (1, 1, 1), "branch2_conv_c")(y))
    return nn.relu(shortcut + y)


class _Stem(nn.Module):
  features: int
  temporal: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.relu(_norm("norm")(_conv(self.features, (self.temporal, 7, 7), (1, 2, 2), "conv")(x)))
    return nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding=((0, 0), (1, 1), (1, 1)))


class _Fuse(nn.Module):
  features: int

  @nn.compact
  def __call__(self, slow: jax.Array, fast: jax.Array) -> jax.Array:
    conv = nn.Conv(
      self.features,
      (7, 1, 1),
      strides=(ALPHA, 1, 1),
      padding=((3, 3), (0, 0), (0, 0)),
      use_bias=False,
      name="conv_fast_to_slow",
    )
    return jnp.concatenate([slow, nn.relu(_norm("norm")(conv(fast)))], axis=-1)


class SlowFast(nn.Module):
  """(slow (N, 8, H, W, 3), fast (N, 32, H, W, 3)) normalised frames -> (N, 2304) pooled features."""

  @nn.compact
  def __call__(self, slow: jax.Array, fast: jax.Array) -> jax.Array:
    slow = _Stem(SLOW_INNER[0], 1, name="blocks_0_multipathway_blocks_0")(slow)
    fast = _Stem(FAST_INNER[0], 5, name="blocks_0_multipathway_blocks_1")(fast)
    slow = _Fuse(2 * FAST_INNER[0], name="blocks_0_multipathway_fusion")(slow, fast)
    for s, depth in enumerate(DEPTHS):
      for path, inner, temporal in ((0, SLOW_INNER[s], SLOW_TEMPORAL[s]), (1, FAST_INNER[s], FAST_TEMPORAL[s])):
        x = slow if path == 0 else fast
        for r in range(depth):
          stride = 2 if (s > 0 and r == 0) else 1
          x = ResBlock(
            inner, temporal, stride, r == 0, name=f"blocks_{s + 1}_multipathway_blocks_{path}_res_blocks_{r}"
          )(x)
        slow, fast = (x, fast) if path == 0 else (slow, x)
      if s < len(DEPTHS) - 1:
        slow = _Fuse(2 * 4 * FAST_INNER[s], name=f"blocks_{s + 1}_multipathway_fusion")(slow, fast)
    return jnp.concatenate([slow.mean(axis=(1, 2, 3)), fast.mean(axis=(1, 2, 3))], axis=-1)


def example_inputs() -> tuple[np.ndarray, np.ndarray]:
  """Inputs of the network's shape (one small clip), for `init` and shape checks: its output pools any size."""
  return np.zeros((1, SLOW_FRAMES, 32, 32, 3), np.float32), np.zeros((1, FAST_FRAMES, 32, 32, 3), np.float32)


_TORCH_NORM = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean")}
_TORCH_NORM["running_var"] = ("batch_stats", "var")


def convert(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Flax variables of `SlowFast` from a PyTorchVideo SlowFast-R50 state dict (the classifier head,
  `blocks.6.*`, and the BatchNorm step counters are dropped).

  Raises:
    ValueError: the state dict is not of this architecture (a layer missing, extra, or of another shape).
  """
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    if key.startswith("blocks.6.") or key.endswith("num_batches_tracked"):
      continue
    parent, layer, leaf = key.rsplit(".", 2)
    if parent.endswith(".branch2"):
      parent, layer = parent[: -len(".branch2")], "branch2_" + layer
    value = np.asarray(value, np.float32)
    if value.ndim == 5:  # Conv3d OIDHW -> DHWIO
      collection, name, value = "params", "kernel", value.transpose(2, 3, 4, 1, 0)
    else:
      collection, name = _TORCH_NORM[leaf]
    variables[collection].setdefault(parent.replace(".", "_"), {}).setdefault(layer, {})[name] = value
  check_fits(variables, SlowFast(), *example_inputs())
  return variables
