"""A whole training run, start to results, in a fresh process: without and with the compilation cache, and
optionally against another revision of the code in interleaved rounds.

  python -m benchmarks.startup --config=configs/emomv_c.py --rounds=3 [--against=REV]

Every run is `python -m emvgan_jax.main --config=...` in a fresh process and workdir, timed from the spawn to the
process's exit (imports, data, compilation, training with early stopping, checkpoints, results, plots and report):
  cold  no compilation cache;
  warm  a compilation cache that one untimed run of the same side filled first.
The phases come from the run's own log lines (absl's timestamps): `imports` until its first line, `state` until
the parameter count (data loaded, initial state created), `train` until the line that ends training, `results`
to the end. (Revisions older than the "Trained to step" line merge `train` into `results` for a run that does
not stop early.)

With `--sweep_seeds=0,1,2` every run is instead `python -m emvgan_jax.tools.sweep --configs=... --seeds=0,1,2` (the
seeds trained one after another in one process, as a sweep trains them), timed the same way; it has no phases.

With `--against=REV` a checkout of REV (a git worktree in a temporary folder, whose package and config files
the runs use instead of this one's) alternates with this code in every round, who goes first alternating too.
The script prints the ratio this code / REV per mode: the median of the rounds, with min and max (and a note if
the runs did not all stop at the same checkpoint step, i.e. did not train alike).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from absl import flags

import benchmarks
from emvgan_jax import errors
from emvgan_jax.tools import cli

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The script's flags, defined only when it runs (`benchmark --full_run` and the tests import this module)."""
  flags.DEFINE_string("config", "configs/emomv_c.py", "Config file, relative to the repository root.")
  flags.DEFINE_integer("rounds", 3, "Timed rounds (each runs every side and mode once).")
  flags.DEFINE_string("against", None, "A git revision to time in alternation with this code.")
  flags.DEFINE_list("modes", ["cold", "warm"], "cold (no compilation cache) and/or warm (a filled one).")
  flags.DEFINE_string("json", None, "Also write every run's figures to this JSON file.")
  flags.DEFINE_multi_string("override", [], "A config override for every run, e.g. data.data_dir=D.")
  flags.DEFINE_list("sweep_seeds", [], "Time a sweep of these seeds (one process) instead of one run.")


MODES = ("cold", "warm")
# absl's log prefix: I1201 23:56:15.670300 <thread> file.py:line]
_LOG_TIME = re.compile(r"^[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+) +\d+ +(\S+)\] (.*)$")
_PHASE_ENDS = (("imports", None), ("state", "parameters; mesh"), ("train", "Early stopping at step|Trained to step"))


def _seconds_of_day(t: float) -> float:
  lt = time.localtime(t)
  return lt.tm_hour * 3600 + lt.tm_min * 60 + lt.tm_sec + (t % 1)


def phases(stderr: str, start: float, wall: float) -> dict[str, float]:
  """Seconds from the spawn to the first log line, to the parameter count and to the end of training, and the
  rest; from absl's timestamps (time of day, so a run across midnight is handled modulo a day)."""
  t0 = _seconds_of_day(start)
  marks: dict[str, float] = {}
  for line in stderr.splitlines():
    m = _LOG_TIME.match(line)
    if not m:
      continue
    t = (int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) - t0) % 86400
    for name, pattern in _PHASE_ENDS:
      if name not in marks and (pattern is None or re.search(pattern, m[5])):
        marks[name] = t
  out, before = {}, 0.0
  for name, _ in _PHASE_ENDS:
    if name in marks:
      out[name] = marks[name] - before
      before = marks[name]
  out["results"] = wall - before
  return out


def run_main(cwd: str, config: str, overrides: Sequence[str], *, cache_dir: str = "") -> dict[str, Any]:
  """Runs `python -m emvgan_jax.main` in `cwd` (whose package it imports) in a fresh workdir; returns its wall
  time, phases and checkpoint step. `cache_dir=""`: no compilation cache.

  Raises:
    emvgan_jax.tools.errors.Error: the run failed (its last output is printed first).
  """

  with tempfile.TemporaryDirectory(prefix="emvgan_bench_") as workdir:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if FLAGS.sweep_seeds:
      return _run_sweep(cwd, config, overrides, cache_dir, workdir, env)
    cmd = [
      sys.executable,
      "-m",
      "emvgan_jax.main",
      f"--config={config}",
      f"--workdir={workdir}",
      "--config.train.progress_bar=False",
      f"--compilation_cache_dir={cache_dir}",
      *(f"--config.{o}" if not o.startswith("--") else o for o in overrides),
    ]
    start = time.time()
    proc, wall = _timed(cmd, cwd, env, "run")
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
      results = json.load(f)
  return {
    "wall_s": wall,
    "phases": phases(proc.stderr, start, wall),
    "checkpoint_step": results["checkpoint_step"],
    "results": results,
  }


def _run_sweep(
  cwd: str, config: str, overrides: Sequence[str], cache_dir: str, workdir: str, env: dict[str, str]
) -> dict[str, Any]:
  """`emvgan-sweep` of --sweep_seeds in `cwd`, timed from its spawn to its exit (see `run_main`)."""
  cmd = [
    sys.executable,
    "-m",
    "emvgan_jax.tools.sweep",
    f"--configs={config}",
    f"--seeds={','.join(FLAGS.sweep_seeds)}",
    f"--workdir={workdir}",
    f"--compilation_cache_dir={cache_dir}",
    *(f"--override={o}" for o in overrides),
  ]
  _, wall = _timed(cmd, cwd, env, "sweep")
  with open(os.path.join(workdir, "table.json"), encoding="utf-8") as f:
    table = json.load(f)
  return {"wall_s": wall, "phases": {}, "checkpoint_step": None, "results": table}


def _timed(cmd: list[str], cwd: str, env: dict[str, str], what: str) -> tuple[subprocess.CompletedProcess, float]:
  """`cmd` run in `cwd`, and its wall time from spawn to exit.

  Raises:
    emvgan_jax.tools.errors.Error: it failed (its last output is printed first).
  """
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, check=False)
  wall = time.perf_counter() - t0
  if proc.returncode:
    benchmarks.show_failure(proc.stderr)
    raise errors.Error(f"the {what} in {cwd} failed ({' '.join(cmd)}; its last output is above)")
  return proc, wall


def _show(side: str, mode: str, r: dict[str, Any]) -> None:
  ph = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
  detail = f"  ({ph}; checkpoint step {r['checkpoint_step']})" if r["checkpoint_step"] is not None else ""
  print(f"    {side:>10} {mode}: {r['wall_s']:5.1f} s{detail}", flush=True)


def main(argv: Sequence[str]) -> None:
  _run(argv)  # inside the one error boundary: cli.run_app


def _run(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  modes = [m for m in FLAGS.modes if m in MODES]
  if not modes or len(modes) != len(FLAGS.modes):
    raise errors.UsageError(f"--modes must name cold and/or warm, got {','.join(FLAGS.modes)}")
  if FLAGS.rounds < 1:
    raise errors.UsageError(f"--rounds must be a positive integer, got {FLAGS.rounds}")
  print(benchmarks.machine(), flush=True)
  with contextlib.ExitStack() as stack:
    sides = {"this code": benchmarks.REPO}
    if FLAGS.against:
      sides[FLAGS.against] = stack.enter_context(benchmarks.checkout(FLAGS.against))
    caches = {side: stack.enter_context(tempfile.TemporaryDirectory(prefix="emvgan_xla_")) for side in sides}
    for side, cwd in sides.items():  # untimed: fills each side's cache (and builds any TFDS dataset first)
      run_main(cwd, FLAGS.config, FLAGS.override, cache_dir=caches[side])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {m: [] for m in modes} for s in sides}
    order = list(sides.items())
    for k in range(FLAGS.rounds):
      print(f"  round {k + 1}/{FLAGS.rounds}", flush=True)
      for mode in modes:
        for side, cwd in order if k % 2 == 0 else order[::-1]:  # who goes first alternates by round
          r = run_main(cwd, FLAGS.config, FLAGS.override, cache_dir=caches[side] if mode == "warm" else "")
          _show(side, mode, r)
          runs[side][mode].append(r)
  steps = {r["checkpoint_step"] for s in runs.values() for m in s.values() for r in m} - {None}
  print(f"{FLAGS.config}, whole runs (seconds, median [min, max] of {FLAGS.rounds}):")
  for side in sides:
    for mode in modes:
      w = sorted(r["wall_s"] for r in runs[side][mode])
      print(f"  {side:>10} {mode}: {statistics.median(w):5.1f} s [{w[0]:.1f}, {w[-1]:.1f}]")
  if FLAGS.against:
    for mode in modes:
      mine = [r["wall_s"] for r in runs["this code"][mode]]
      print("  " + benchmarks.ratio_line(mode, mine, [r["wall_s"] for r in runs[FLAGS.against][mode]], FLAGS.against))
  if len(steps) > 1:
    print(f"  note: the runs stopped at different checkpoint steps {sorted(steps)}: they did not train alike")
  if FLAGS.json:
    slim = {
      s: {m: [{k: v for k, v in r.items() if k != "results"} for r in rs] for m, rs in d.items()}
      for s, d in runs.items()
    }
    with open(FLAGS.json, "w", encoding="utf-8") as f:
      json.dump({"machine": benchmarks.machine(), "config": FLAGS.config, "runs": slim}, f, indent=1)


if __name__ == "__main__":
  from emvgan_jax.tools import cli  # pylint: disable=g-import-not-at-top

  _define_flags()
  cli.run_app(main, __doc__)
