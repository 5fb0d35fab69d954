"""The extractors' weights: the published ones (fetched once from their official sources, converted, cached) or
random ones (for tests and for trying the pipeline where the weights cannot be fetched).

- VGGish: AudioSet's VGGish as released for PyTorch by torchvggish (`vggish-10086976.pth`, the TensorFlow
  checkpoint converted by its author), https://github.com/harritaylor/torchvggish/releases/tag/v0.1.
- SlowFast: PyTorchVideo's model zoo, SlowFast R50 8x8 trained on Kinetics-400 (`SLOWFAST_8x8_R50.pyth`).

Reading those files needs PyTorch (`torch.load`; `pip install -e '.[extract]'`); the converted weights are kept
as `.npz` in the cache (`~/.cache/emvgan_jax/weights`, or `--weights_dir`), after which PyTorch is not needed.
"""

from __future__ import annotations

import http.client
import os
import urllib.request
from typing import Any

import jax
import numpy as np

from emvgan_jax import errors
from emvgan_jax.data.digest import file_sha256
from emvgan_jax.extraction import slowfast, vggish

SOURCES = {
  "vggish": "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
  "slowfast": "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/SLOWFAST_8x8_R50.pyth",
}
# torch.hub's convention: the file name carries the first 8 hex digits of the file's SHA-256.
SHA256_PREFIX = {"vggish": "10086976"}
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "emvgan_jax", "weights")


class WeightsError(errors.Error, RuntimeError):
  """The published weights cannot be had (offline, a damaged download, no PyTorch to read them)."""


# Per extractor: its network, inputs of its shape, and the converter of its PyTorch state dict.
_MODELS = {
  "vggish": (vggish.VGGish, vggish.example_inputs, vggish.convert),
  "slowfast": (slowfast.SlowFast, slowfast.example_inputs, slowfast.convert),
}


def random_variables(model: str, seed: int = 0) -> dict[str, Any]:
  """Random variables of an extractor, of the shapes its `init` gives: kernels He-normal for their fan-in, biases
  0, BatchNorm scales and variances 1, means 0.

  They are drawn with numpy (seeded) from the shapes alone: the network's own `init` took 28 s for SlowFast on 2
  CPU cores run op by op, and 19 s to compile.
  """
  network, examples, _ = _MODELS[model]
  shapes = jax.eval_shape(network().init, jax.random.key(0), *examples())
  rng = np.random.default_rng(seed)

  def draw(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> np.ndarray:
    name = getattr(path[-1], "key", "")
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(leaf.dtype)
    return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}/"))
    else:
      out[prefix + k] = np.asarray(v)
  return out


def _unflat(flat: dict[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for key, value in flat.items():
    *parents, leaf = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _expected(model: str) -> str:
  prefix = SHA256_PREFIX.get(model)
  # PyTorchVideo's model zoo publishes no checksum for its files (nor a hash in the name): the file is checked by
  # loading it and matching every tensor's shape to the network's.
  return f"SHA-256 {prefix}..." if prefix else "no published SHA-256, checked by loading it"


def _check_sha256(model: str, path: str) -> None:
  prefix = SHA256_PREFIX.get(model)
  if not prefix:
    return
  digest = file_sha256(path)
  if not digest.startswith(prefix):
    raise WeightsError(
      f"{path} has SHA-256 {digest[:8]}..., expected {prefix}... (the file at {SOURCES[model]}): "
      "delete it and run again to fetch it, or put the published file there"
    )


def _download(model: str, directory: str) -> str:
  url = SOURCES[model]
  path = os.path.join(directory, os.path.basename(url))
  if os.path.isfile(path):  # fetched before, or put there by the user: checked all the same
    _check_sha256(model, path)
    return path
  os.makedirs(directory, exist_ok=True)
  try:
    with urllib.request.urlopen(url, timeout=30) as response, open(path + ".tmp", "wb") as f:
      for block in iter(lambda: response.read(1 << 20), b""):
        f.write(block)
  except (OSError, http.client.HTTPException) as e:  # no network, a refused or a dropped connection
    if os.path.exists(path + ".tmp"):
      os.remove(path + ".tmp")
    raise WeightsError(
      f"cannot fetch the published {model} weights from {url} ({_expected(model)}; {e}); download the file into "
      f"{directory} yourself, or pass --weights=random to try the pipeline with random weights"
    ) from None
  try:
    _check_sha256(model, path + ".tmp")
  except WeightsError:
    os.remove(path + ".tmp")
    raise
  os.replace(path + ".tmp", path)
  return path


def _torch_state_dict(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # deferred: PyTorch, the [extract] extra, only to read the published weights once
  except ImportError:
    raise WeightsError(
      f"reading {path} needs PyTorch: pip install -e '.[extract]' (once converted, the weights are cached as .npz)"
    ) from None
  try:
    # weights_only=False: PyTorchVideo's checkpoints hold a dict beside the tensors (the file is the official one).
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    return {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
  except Exception as e:  # pylint: disable=broad-except  (a truncated or wrong download: torch raises many kinds)
    os.remove(path)
    raise WeightsError(
      f"{path} is not a readable PyTorch checkpoint ({e}); removed it: rerun to fetch it again"
    ) from None


def published_variables(model: str, directory: str | None = None) -> dict[str, Any]:
  """The published weights of `model` ('vggish' or 'slowfast'), converted to Flax (cached as .npz)."""
  directory = os.path.expanduser(directory or DEFAULT_DIR)
  cached = os.path.join(directory, f"{model}_flax.npz")
  network, examples, convert = _MODELS[model]
  if os.path.isfile(cached):
    with np.load(cached) as f:
      variables = _unflat({k: f[k] for k in f.files})
    vggish.check_fits(variables, network(), *examples())  # a cache of another version must not load half-way
  else:
    variables = convert(_torch_state_dict(_download(model, directory)))  # checks the shapes itself
    np.savez(cached + ".tmp.npz", **_flat(variables))
    os.replace(cached + ".tmp.npz", cached)
  return variables


def variables_for(model: str, weights: str, directory: str | None = None, seed: int = 0) -> dict[str, Any]:
  """'published' or 'random' weights of `model`."""
  if weights == "random":
    return random_variables(model, seed)
  return published_variables(model, directory)
