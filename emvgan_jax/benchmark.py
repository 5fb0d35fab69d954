"""Training throughput and full-run wall time (speed is measured here, never in tests).

  python -m emvgan_jax.benchmark --config=configs/emomv_baseline.py:c,retrieval_single \
      --batch_sizes=256,4096 --manual_dir=$EMOMV_DIR --data_dir=/tmp/tfds
  python -m emvgan_jax.benchmark --config=configs/emomv_c.py --batch_sizes=256,4096 --full_run \
      --manual_dir=$EMOMV_DIR --data_dir=/tmp/tfds

Steady state: the config's train step, jitted once with its shardings and donated state, on batches of real
standardised EmoMV rows (sampled with replacement when the batch is larger than the split), timed after
compilation and warm-up over at least --seconds; it prints examples/s, ms/step and the FLOP rate from XLA's cost
analysis. `--full_run` then times `python -m emvgan_jax.main` end to end in a fresh process with a fresh
workdir and no compilation cache: imports, dataset loading, compilation, training with early stopping,
checkpoints and the final evaluation, all included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from absl import flags
from ml_collections import config_flags

if TYPE_CHECKING:
  import ml_collections

  from emvgan_jax.data.splits import Split

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file to benchmark.", lock_config=True)
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256", "4096"], "Global batch sizes to time.")
_SECONDS = flags.DEFINE_float("seconds", 5.0, "Minimum timed seconds per batch size.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (overrides config.data.data_dir).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Local EmoMV copy (overrides config.data.manual_dir).")
_FULL_RUN = flags.DEFINE_bool("full_run", False, "Also time a full training run of the config, end to end.")
_JSON = flags.DEFINE_string("json", None, "Also write the steady-state figures to this JSON file.")
flags.mark_flags_as_required(["config"])


def matmul_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
  """The rate of a jitted float32 `n^3` matmul on the first device: the reference for "% of peak"."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

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
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax import families, train  # pylint: disable=g-import-not-at-top
  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  reference = config.copy_and_resolve_references()
  with reference.unlocked():
    if "nce_impl" in reference.loss:
      reference.loss.nce_impl = "dense"
    reference.train.accumulation_steps = 1
  family = families.build(reference)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  step = train.compile_train_step(family, mesh, sharding.shardings_of(abstract))
  return _flops(step.lower(abstract, batch, rng))


def _timed_batches(batch_size: int, data: Split, mesh: object) -> list:
  import numpy as np  # pylint: disable=g-import-not-at-top

  from emvgan_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  sampler = np.random.default_rng(0)
  batches = []
  for _ in range(4 if batch_size <= 8192 else 2):  # two 65,536-row batches of EmoMV-C are already 1.3 GB
    rows = sampler.choice(len(data), batch_size, replace=batch_size > len(data))
    batch = pipeline.gather_batch(data, rows, batch_size)
    batches.append(pipeline.make_global_batch(batch, sharding.batch_sharding(mesh)))
  return batches


def steady_state(config: ml_collections.ConfigDict, batch_size: int, data: Split) -> dict:
  """Examples/s of the config's jitted train step at `batch_size`, after compile and warm-up, and its share of
  the matmul peak, measured in the same rounds (a round of steps, then the matmul, alternately)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from emvgan_jax import families, train  # pylint: disable=g-import-not-at-top
  from emvgan_jax.runtime import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh(config.sharding.mesh_shape)
  family = families.build(config)
  state, abstract = train.create_state(family, config, mesh, data.video_dim, data.music_dim)
  step = train.compile_train_step(family, mesh, sharding.shardings_of(abstract))
  rng = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  batches = _timed_batches(batch_size, data, mesh)
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
  while not step_s or time.perf_counter() - start < _SECONDS.value:
    t0 = time.perf_counter()
    for _ in range(group):
      state, metrics = compiled(state, batches[n % len(batches)], rng)
      n += 1
    jax.block_until_ready(metrics)
    step_s.append((time.perf_counter() - t0) / group)
    peaks.append(matmul_peak_gflops())
  sec = float(np.median(step_s))
  peak = float(np.median(peaks))
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
    "percent_of_peak": 100 * useful / sec / 1e9 / peak,
    "compile_s": compile_s,
    "steps": n,
  }


def full_run(config_arg: str, overrides: list[str]) -> dict:
  """Wall time of `python -m emvgan_jax.main` on the config, from process start to results.json."""
  with tempfile.TemporaryDirectory(prefix="emvgan_bench_") as workdir:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    cmd = [
      sys.executable,
      "-m",
      "emvgan_jax.main",
      f"--config={config_arg}",
      f"--workdir={workdir}",
      "--config.train.progress_bar=False",
      "--compilation_cache_dir=",
      *overrides,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
      raise RuntimeError(f"full run failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
      results = json.load(f)
  return {"wall_s": wall, "checkpoint_step": results["checkpoint_step"], "results": results}


def main(argv: list[str]) -> None:
  del argv
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  cli.run_tool(_benchmark)  # a bad flag, config field or data: one `error: ...` line


def _benchmark() -> None:
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax import benchmarks, config_lib, families, train  # pylint: disable=g-import-not-at-top
  from emvgan_jax.data import emomv  # pylint: disable=g-import-not-at-top

  config = config_lib.with_data(_CONFIG.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
  train.check_config(config)
  for b in _BATCH_SIZES.value:
    if not b.isdigit() or int(b) < 1:
      raise config_lib.ConfigError(f"--batch_sizes must be positive integers, got {','.join(_BATCH_SIZES.value)}")
  data = emomv.load_run_data(config).train
  results: list[dict] = []
  print(benchmarks.machine())
  print(
    f"{families.build(config).description} on {config.data.dataset}; {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s)"
  )
  for b in _BATCH_SIZES.value:
    r = steady_state(config, int(b), data)
    lo, hi = r["ms_per_step_min_max"]
    print(
      f"  batch {r['batch_size']:>6}: {r['examples_per_s']:>9,.0f} examples/s  {r['ms_per_step']:8.1f} ms/step "
      f"[{lo:.1f}, {hi:.1f}]  {r['model_gflop_per_s']:6.1f} GFLOP/s = {r['percent_of_peak']:4.1f}% of the "
      f"{r['peak_gflop_per_s']:.0f} GFLOP/s matmul peak  (compile {r['compile_s']:.1f} s, {r['steps']} steps)",
      flush=True,
    )
    results.append(r)
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"machine": benchmarks.machine(), "steady_state": results}, f, indent=1)
  if _FULL_RUN.value:
    config_arg = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--config="))
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    if _DATA_DIR.value:
      overrides.append(f"--config.data.data_dir={_DATA_DIR.value}")
    if _MANUAL_DIR.value:
      overrides.append(f"--config.data.manual_dir={_MANUAL_DIR.value}")
    r = full_run(config_arg, overrides)
    res = r["results"]
    summary = f"best checkpoint step {r['checkpoint_step']}"
    if "retrieval" in res:
      summary += (
        f", v->m mAP {res['retrieval']['video_to_music']['map']:.3f}, "
        f"m->v mAP {res['retrieval']['music_to_video']['map']:.3f}"
      )
    summary += f", ROC-AUC {res['classification']['roc_auc']:.3f}"
    print(f"  full run (fresh process, no compilation cache, compile included): {r['wall_s']:.1f} s wall ({summary})")


if __name__ == "__main__":
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
