"""The train step's throughput and its share of the matmul peak, measured (shared by `python -m
benchmarks.train_step` and `benchmarks.accelerator`; no flags here, so both can import it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from emvgan_jax import families, train
from emvgan_jax.data import pipeline
from emvgan_jax.runtime import sharding

if TYPE_CHECKING:
  import ml_collections

  from emvgan_jax.data.splits import Split


def matmul_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
  """The rate of a jitted float32 `n^3` matmul on the first device: the reference for "% of peak"."""

  x = jax.device_put(jnp.ones((n, n), jnp.float32) / n, jax.devices()[0])
  mm = jax.jit(lambda a: a @ a)
  jax.block_until_ready(mm(x))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(mm(x))
    times.append(time.perf_counter() - t0)
  return 2 * n**3 / sorted(times)[len(times) // 2] / 1e9  # the median, as for the step it is compared with


def _flops(compiled_or_lowered: object) -> float:
  cost = compiled_or_lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def model_flops(config: ml_collections.ConfigDict, state: object, batch: object, rng: object, mesh: object) -> float:
  """The FLOPs of one step as the plain program does them: EMVGAN with the dense InfoNCE and no accumulation.

  XLA's cost analysis counts a loop's body once, so the blockwise loss and accumulation (both loops) would be
  undercounted, and their recomputation is extra work rather than useful work. "% of peak" divides these FLOPs,
  the same whatever the implementation, by the measured time.
  """

  reference = config.copy_and_resolve_references()
  with reference.unlocked():
    if "nce_impl" in reference.loss:
      reference.loss.nce_impl = "dense"
    reference.train.accumulation_steps = 1
  family = families.build(reference)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  step = train.compile_train_step(family, mesh, sharding.shardings_of(abstract))
  return _flops(step.lower(abstract, batch, rng))


def _training_step(
  config: ml_collections.ConfigDict, batch_size: int, data: Split, *, devices: list | None = None, batches: int = 0
) -> tuple:
  """(mesh, state, jitted step, rng, batches) of `config`: `batches` global batches of `batch_size` rows sampled
  from `data` (0: 4, or 2 above 8,192 rows, since two 65,536-row batches of EmoMV-C are already 1.3 GB)."""

  mesh = sharding.make_mesh(config.sharding.mesh_shape, devices)
  family = families.build(config)
  state, abstract = train.create_state(family, config, mesh, data.video_dim, data.music_dim)
  step = train.compile_train_step(family, mesh, sharding.shardings_of(abstract))
  rng = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  sampler = np.random.default_rng(0)
  out = []
  for _ in range(batches or (4 if batch_size <= 8192 else 2)):
    rows = sampler.choice(len(data), batch_size, replace=batch_size > len(data))
    batch = pipeline.gather_batch(data, rows, batch_size)
    out.append(pipeline.make_global_batch(batch, sharding.batch_sharding(mesh)))
  return mesh, state, step, rng, out


def steady_state(
  config: ml_collections.ConfigDict,
  batch_size: int,
  data: Split,
  *,
  seconds: float = 5.0,
  devices: list | None = None,
) -> dict:
  """Examples/s of the config's jitted train step at `batch_size`, after compile and warm-up, and its share of
  the matmul peak, measured in the same rounds (a round of steps, then the matmul, alternately): the median of
  the rounds' shares, with min and max. `devices`: the devices of the mesh (default: all of them)."""

  mesh, state, step, rng, batches = _training_step(config, batch_size, data, devices=devices)
  t0 = time.perf_counter()
  compiled = step.lower(state, batches[0], rng).compile()
  compile_s = time.perf_counter() - t0
  useful = model_flops(config, state, batches[0], rng, mesh)
  # Large batches take seconds a step: one warm-up step, and rounds of one step.
  group = 10 if batch_size <= 8192 else 1
  for i in range(3 if group > 1 else 1):
    state, metrics = compiled(state, batches[i % len(batches)], rng)
  jax.block_until_ready(metrics)
  step_s, peaks, n, start = [], [], 0, time.perf_counter()
  while not step_s or time.perf_counter() - start < seconds:
    t0 = time.perf_counter()
    for _ in range(group):
      state, metrics = compiled(state, batches[n % len(batches)], rng)
      n += 1
    jax.block_until_ready(metrics)
    step_s.append((time.perf_counter() - t0) / group)
    peaks.append(matmul_peak_gflops())
  sec = float(np.median(step_s))
  peak = float(np.median(peaks))
  # The share of the peak is a comparison: each round's step against the matmul timed right after it.
  shares = 100 * useful / np.asarray(step_s) / 1e9 / np.asarray(peaks)
  return {
    "batch_size": batch_size,
    "devices": mesh.size,
    "examples_per_s": batch_size / sec,
    "ms_per_step": 1e3 * sec,
    "ms_per_step_min_max": (1e3 * min(step_s), 1e3 * max(step_s)),
    "model_gflop_per_s": useful / sec / 1e9,
    "compiled_gflop": _flops(compiled) / 1e9,
    "model_gflop": useful / 1e9,
    "peak_gflop_per_s": peak,
    "percent_of_peak": float(np.median(shares)),
    "percent_of_peak_min_max": (float(shares.min()), float(shares.max())),
    "compile_s": compile_s,
    "steps": n,
  }


def share_text(r: dict) -> str:
  """A `steady_state` result's share of the peak as printed: 'median% [min, max]'."""
  lo, hi = r["percent_of_peak_min_max"]
  return f"{r['percent_of_peak']:4.1f}% [{lo:.1f}, {hi:.1f}]"


def compare_steps(
  configs: dict[str, ml_collections.ConfigDict], batch_size: int, data: Split, *, rounds: int = 7, steps: int = 3
) -> dict[str, dict]:
  """Each config's train step on the same batch, timed in interleaved rounds (`steps` steps of each side per
  round, in turn): per side the median ms/step with min and max, and the median of its per-round ratio to the
  first side's time."""

  sides = {}
  for name, config in configs.items():
    _, state, step, rng, (batch,) = _training_step(config, batch_size, data, batches=1)
    for _ in range(2):  # compile and warm up
      state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    sides[name] = {"step": step, "state": state, "batch": batch, "rng": rng, "ms": []}
  for _ in range(rounds):
    for side in sides.values():
      t0 = time.perf_counter()
      for _ in range(steps):
        side["state"], metrics = side["step"](side["state"], side["batch"], side["rng"])
      jax.block_until_ready(metrics)
      side["ms"].append(1e3 * (time.perf_counter() - t0) / steps)
  first = np.asarray(next(iter(sides.values()))["ms"])
  out = {}
  for name, side in sides.items():
    ms = np.asarray(side["ms"])
    ratio = ms / first
    out[name] = {
      "ms_median": float(np.median(ms)),
      "ms_min": float(ms.min()),
      "ms_max": float(ms.max()),
      "time_ratio_to_first": [float(np.median(ratio)), float(ratio.min()), float(ratio.max())],
    }
  return out
