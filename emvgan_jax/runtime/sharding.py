"""Device mesh and sharding rules.

What the EMVGAN design calls "pmap/pjit" is, in today's JAX, `jax.jit` with explicit shardings over a named
`Mesh`: the batch is split on the `data` axis, parameters are replicated (the default) or sharded by a rule, and
XLA inserts the collectives (a contrastive loss over the global batch is just `z_a @ z_b.T`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(mesh_shape: Mapping[str, int] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with axes ('data', 'model') from the config.

  Args:
    mesh_shape: sizes per axis; -1 on one axis takes every remaining device. Default: all devices on `data`,
      `model` of size 1.
    devices: the devices to use (default: all of them, every process's).
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = {DATA_AXIS: -1, MODEL_AXIS: 1, **dict(mesh_shape or {})}
  unknown = set(shape) - {DATA_AXIS, MODEL_AXIS}
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)}: the mesh has axes '{DATA_AXIS}' and '{MODEL_AXIS}'")
  sizes = [shape[DATA_AXIS], shape[MODEL_AXIS]]
  if sizes.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {shape}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not divide into a mesh of shape {shape}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f"Mesh shape {dict(zip((DATA_AXIS, MODEL_AXIS), sizes))} needs {math.prod(sizes)} devices, found {len(devices)}"
    )
  try:
    device_array = jax.experimental.mesh_utils.create_device_mesh(sizes, devices)
  except Exception:  # pylint: disable=broad-except  (CPU and odd topologies: a plain reshape is fine)
    device_array = np.asarray(devices).reshape(sizes)
  return Mesh(device_array, (DATA_AXIS, MODEL_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: tuple[int, ...], mesh: Mesh, rule: str, min_size: int) -> P:
  """The partition spec of one parameter (or optimizer-moment) leaf under `rule`.

  Rules:
    'replicate': every leaf on every device.
    'fsdp': leaves with at least `min_size` elements are split on their largest dimension that the `data` axis
      divides (ZeRO-3 style: parameters and Adam moments live in shards; XLA gathers them for the matmuls).
    'tensor': like 'fsdp' but over the `model` axis (simple tensor parallelism for wide layers).
  """
  if rule == "replicate" or not shape or math.prod(shape) < min_size:
    return P()
  if rule not in ("fsdp", "tensor"):
    raise ValueError(f"Unknown parameter sharding rule {rule!r}: use 'replicate', 'fsdp' or 'tensor'")
  axis = DATA_AXIS if rule == "fsdp" else MODEL_AXIS
  n = mesh.shape[axis]
  if n == 1:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % n == 0:
      spec = [None] * len(shape)
      spec[dim] = axis
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, rule: str = "replicate", min_size: int = 2**14) -> Any:
  """NamedShardings for every leaf of a (possibly abstract) pytree, by `param_spec`.

  The rule looks only at shapes, so it gives matching shardings to parameters and to the optimizer moments that
  mirror them; scalars (step counters) are replicated.
  """
  return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), mesh, rule, min_size)), tree)


def abstract_state(init: Callable[[jax.Array], Any], mesh: Mesh, rule: str = "replicate", min_size: int = 2**14) -> Any:
  """The train state `init(rng)` would make, as ShapeDtypeStructs carrying their shardings under `rule`.

  This is the one description of a state's layout: `train.create_state` creates the state in it, and every
  checkpoint restore uses it as the target, so restored arrays land directly in their shardings.
  """
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = tree_shardings(abstract, mesh, rule, min_size)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def shardings_of(abstract: Any) -> Any:
  """The sharding of every leaf of an `abstract_state`."""
  return jax.tree.map(lambda a: a.sharding, abstract)
