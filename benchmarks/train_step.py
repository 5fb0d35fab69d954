"""Training throughput and full-run wall time (speed is measured here, never in tests).

  python -m benchmarks.train_step --config=configs/emomv_baseline.py:c,retrieval_single \
      --batch_sizes=256,4096 --manual_dir=$EMOMV_DIR --data_dir=/tmp/tfds
  python -m benchmarks.train_step --config=configs/emomv_c.py --batch_sizes=256,4096 --full_run \
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
import sys
from typing import TYPE_CHECKING

from absl import flags
from ml_collections import config_flags

import benchmarks
from benchmarks import startup
from emvgan_jax.tools import cli

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
_COMPARE = flags.DEFINE_multi_string(
  "compare",
  [],
  "A config override, e.g. loss.nce_impl=dense (repeatable; ';' joins several in one side): each is one more side, "
  "timed against the config in interleaved rounds at every batch size.",
)
flags.mark_flags_as_required(["config"])


def full_run(config_arg: str, overrides: list[str]) -> dict:
  """Wall time of `python -m emvgan_jax.main` on the config, from process start to results.json, with no
  compilation cache (`benchmarks.startup` times it also with a warm cache, and against other revisions)."""

  return startup.run_main(os.getcwd(), config_arg, overrides)


def _compare(config: ml_collections.ConfigDict, data: Split) -> list[dict]:
  """The config against each --compare side, interleaved, at every batch size; prints and returns the figures."""
  from benchmarks import step as step_lib  # deferred: JAX loads once the flags are parsed
  from emvgan_jax import config_lib, train  # deferred: JAX loads once the flags are parsed

  configs = {"config": config}
  for side in _COMPARE.value:
    other = config.copy_and_resolve_references()
    with other.unlocked():
      for assignment in side.split(";"):
        config_lib.apply_override(other, assignment.strip())
    train.check_config(other)
    configs[side] = other
  out = []
  for b in _BATCH_SIZES.value:
    r = step_lib.compare_steps(configs, int(b), data)
    print(f"  batch {b}, interleaved rounds (median ms/step [min, max]; time / the config's, median [min, max]):")
    for name, f in r.items():
      ratio = f["time_ratio_to_first"]
      print(
        f"    {name:32s} {f['ms_median']:8.1f} [{f['ms_min']:.1f}, {f['ms_max']:.1f}]  "
        f"{ratio[0]:.2f}x [{ratio[1]:.2f}, {ratio[2]:.2f}]",
        flush=True,
      )
    out.append({"batch_size": int(b), "sides": r})
  return out


def main(argv: list[str]) -> None:
  del argv

  _benchmark()  # a bad flag, config field or data: one `error: ...` line (cli.run_app's boundary)


def _benchmark() -> None:
  import jax  # deferred: JAX loads once the flags are parsed

  from benchmarks import step as step_lib  # deferred: JAX loads once the flags are parsed
  from emvgan_jax import config_lib, families, train  # deferred: JAX loads once the flags are parsed
  from emvgan_jax.data import emomv  # deferred: JAX loads once the flags are parsed

  config = config_lib.with_data(_CONFIG.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
  train.check_config(config)
  benchmarks.positive_ints("batch_sizes", _BATCH_SIZES.value)
  data = emomv.load_run_data(config).train
  results: list[dict] = []
  print(benchmarks.machine())
  print(
    f"{families.build(config).description} on {config.data.dataset}; {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s)"
  )
  for b in _BATCH_SIZES.value:
    r = step_lib.steady_state(config, int(b), data, seconds=_SECONDS.value)
    lo, hi = r["ms_per_step_min_max"]
    print(
      f"  batch {r['batch_size']:>6}: {r['examples_per_s']:>9,.0f} examples/s  {r['ms_per_step']:8.1f} ms/step "
      f"[{lo:.1f}, {hi:.1f}]  {r['model_gflop_per_s']:6.1f} GFLOP/s; {step_lib.share_text(r)} of the matmul peak "
      f"({r['peak_gflop_per_s']:.0f} GFLOP/s, median)  (compile {r['compile_s']:.1f} s, {r['steps']} steps)",
      flush=True,
    )
    results.append(r)
  comparisons = _compare(config, data) if _COMPARE.value else []
  if _JSON.value:
    with open(_JSON.value, "w", encoding="utf-8") as f:
      json.dump({"machine": benchmarks.machine(), "steady_state": results, "compare": comparisons}, f, indent=1)
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
  from emvgan_jax.tools import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
