"""Everything that decides speed, on whatever backend is present: `python -m benchmarks.accelerator`.

  python -m benchmarks.accelerator --json=accelerator.json
  python -m benchmarks.accelerator --batch_sizes=4096,65536 --device_counts=1,8 --search_sizes=10000000

On a GPU (`pip install -e '.[cuda12]'`), a TPU VM (`'.[tpu]'`) or the CPU, it measures and prints one table:

  matmul   the rate of a jitted float32 2048^3 matmul on one device (the "% of peak" reference)
  step     the EMVGAN train step of configs/emomv_c.py at each batch size and device count (a mesh of the first
           N devices): examples/s, ms/step with min and max, % of peak on the dense program's FLOPs, compile time
  loader   the host side of the input pipeline (grain, shuffled, standardised numpy batches) and the host->device
           copy into sharded arrays, at the largest batch size
  search   `search.GalleryIndex` over all devices: 1,024 queries, top 10, at each gallery size, with float32
           scores and with bfloat16 scores and the exact re-rank (and how many queries it searched again)

The step and the loader run on random features of EmoMV's widths (2304 and 128) with random labels: their speed
does not depend on the values, and nothing needs downloading. Each figure is the median of its rounds, with
the machine and the load at the start printed first. `--json` writes the table's figures too.
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import flags

import benchmarks
from emvgan_jax import config_lib
from emvgan_jax.tools import cli

_BATCHES = flags.DEFINE_list("batch_sizes", ["256", "4096", "16384"], "Global batch sizes of the step.")
_DEVICES = flags.DEFINE_list("device_counts", ["1", "all"], "Device counts of the step's mesh ('all': every one).")
_SEARCH = flags.DEFINE_list("search_sizes", ["1000000"], "Gallery sizes of the search (empty: no search).")
_ROWS = flags.DEFINE_integer("rows", 65536, "Rows of the random training split.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Minimum timed seconds per figure.")
_JSON = flags.DEFINE_string("json", None, "Also write the figures to this JSON file.")


def random_split(rows: int, seed: int = 0) -> object:
  """A training split of EmoMV-C's widths with random features and labels (standardised-looking values)."""
  from emvgan_jax.data.splits import Split  # deferred: JAX loads once the flags are parsed

  rng = np.random.default_rng(seed)
  return Split(
    name=np.asarray([f"row{i}" for i in range(rows)]),
    video=rng.standard_normal((rows, 2304), np.float32),
    music=rng.standard_normal((rows, 128), np.float32),
    match=rng.integers(0, 2, rows).astype(np.int32),
    video_emotion=rng.integers(0, 5, rows).astype(np.int32),
    music_emotion=rng.integers(0, 5, rows).astype(np.int32),
  )


def loader(data: object, batch_size: int, seconds: float) -> dict:
  """Examples/s of the train iterator alone, and with the copy into sharded global arrays."""
  import jax  # deferred: JAX loads once the flags are parsed

  from emvgan_jax.data import pipeline  # deferred: JAX loads once the flags are parsed
  from emvgan_jax.runtime import sharding  # deferred: JAX loads once the flags are parsed

  target = sharding.batch_sharding(sharding.make_mesh())
  out = {}
  for to_device, key in ((False, "host_examples_per_s"), (True, "with_copy_examples_per_s")):
    n, epoch, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      ds = pipeline.train_dataset(data, global_batch_size=batch_size, seed=0, epoch=epoch, drop_remainder=True)
      for batch in pipeline.iterate(ds):
        if to_device:
          jax.block_until_ready(pipeline.make_global_batch(batch, target))
        n += batch_size
      epoch += 1
    out[key] = n / (time.perf_counter() - start)
  return out


def search_rate(size: int, rounds: int = 3, scores: str = "float32") -> dict:
  """Queries/s of `GalleryIndex` over every device (1,024 random queries, top 10, width 64), with `scores`."""
  from emvgan_jax.evaluation import search  # deferred: JAX loads once the flags are parsed

  rng = np.random.default_rng(size)
  gallery = rng.standard_normal((size, 64), np.float32)
  queries = rng.standard_normal((1024, 64), np.float32)
  t0 = time.perf_counter()
  index = search.GalleryIndex(gallery, scores=scores)
  build = time.perf_counter() - t0
  index.search(queries, 10)  # compiles the programs of the timed shape
  index.fallbacks = 0
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    index.search(queries, 10)
    times.append(time.perf_counter() - t0)
  return {
    "size": size,
    "scores": scores,
    "qps": 1024 / float(np.median(times)),
    "build_s": build,
    "min_s": min(times),
    "max_s": max(times),
    "searched_again_per_round": index.fallbacks / rounds,  # of the 1,024 queries
  }


def _device_counts() -> list[int]:
  import jax  # deferred: JAX loads once the flags are parsed

  counts = []
  for c in _DEVICES.value:
    n = jax.device_count() if c == "all" else int(c)
    if n > jax.device_count():
      print(f"  device count {n}: only {jax.device_count()} present; skipped")
    elif n not in counts:
      counts.append(n)
  return counts


def _run() -> dict:
  import jax  # deferred: JAX loads once the flags are parsed

  from benchmarks import step as benchmark  # deferred: JAX loads once the flags are parsed

  print(benchmarks.machine())
  report = {"machine": benchmarks.machine(), "backend": jax.default_backend(), "steps": [], "search": []}
  report["matmul_gflop_per_s"] = benchmark.matmul_peak_gflops(repeats=5)
  print(f"matmul  float32 2048^3 on one device: {report['matmul_gflop_per_s']:,.0f} GFLOP/s")
  config = config_lib.load_config_file("configs/emomv_c.py")
  data = random_split(_ROWS.value)
  for n in _device_counts():
    for b in (int(x) for x in _BATCHES.value):
      if b % n:
        print(f"step    batch {b} does not split over {n} devices; skipped")
        continue
      r = benchmark.steady_state(config, b, data, seconds=_SECONDS.value, devices=jax.devices()[:n])
      report["steps"].append(r)
      lo, hi = r["ms_per_step_min_max"]
      print(
        f"step    {n} device(s), batch {b:>6}: {r['examples_per_s']:>10,.0f} examples/s  {r['ms_per_step']:8.1f} ms "
        f"[{lo:.1f}, {hi:.1f}]  {benchmark.share_text(r)} of peak  compile {r['compile_s']:.1f} s"
      )
  biggest = max(int(x) for x in _BATCHES.value)
  report["loader"] = {
    "batch_size": min(biggest, _ROWS.value),
    **loader(data, min(biggest, _ROWS.value), _SECONDS.value),
  }
  print(
    f"loader  batch {report['loader']['batch_size']}: {report['loader']['host_examples_per_s']:,.0f} examples/s "
    f"(host), {report['loader']['with_copy_examples_per_s']:,.0f} with the copy to {jax.device_count()} device(s)"
  )
  for size in (int(x) for x in _SEARCH.value if x):
    for scores in ("float32", "bfloat16"):
      r = search_rate(size, scores=scores)
      report["search"].append(r)
      again = ""
      if scores == "bfloat16":
        again = f", {r['searched_again_per_round']:g} of 1,024 searched exactly on the host"
      print(
        f"search  {size:,} x 64 over {jax.device_count()} device(s), {scores} scores: {r['qps']:,.0f} queries/s "
        f"(top 10{again})"
      )
  return report


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    benchmarks.positive_ints("batch_sizes", _BATCHES.value)
    benchmarks.positive_ints("device_counts", _DEVICES.value, also=("all",))
    report = _run()
    if _JSON.value:
      with open(_JSON.value, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, default=str)

  body()


if __name__ == "__main__":
  from emvgan_jax.tools import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
