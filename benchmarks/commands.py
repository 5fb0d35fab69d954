"""How long each command takes to answer `--help`, from a fresh process: what a user waits for at every mistake.

  python -m benchmarks.commands [--rounds=5] [--commands=emvgan-train,emvgan-evaluate]

Each round starts every command once, in turn, with `--help`; a command's figure is the median of its rounds, with
min and max. A console script is started as a user starts it (the executable beside this Python, as `pip install`
wrote it), a module with `python -m`. The commands parse their flags before importing JAX, so this is Python's
start, absl and the command's own module.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from absl import flags

import benchmarks
from emvgan_jax import errors
from emvgan_jax.tools import cli

COMMANDS = (
  "emvgan-train",
  "emvgan-evaluate",
  "emvgan-retrieve",
  "emvgan-index",
  "emvgan-sweep",
  "emvgan-tune",
  "emvgan-extract",
  "emomv-build",
  "emomv-features",
  "emomv-synthetic",
)
_COMMANDS = flags.DEFINE_list("commands", list(COMMANDS), "Console scripts, or modules to start with python -m.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds.", lower_bound=1)


def _argv(command: str) -> list[str]:
  """How a user starts `command`: its console script beside this Python, else `python -m` for a module."""
  script = os.path.join(os.path.dirname(sys.executable), command)
  if os.path.isfile(script):
    return [script]
  if "-" in command:
    found = shutil.which(command)
    if not found:
      raise errors.UsageError(f"--commands: {command} is not installed (pip install -e .)")
    return [found]
  return [sys.executable, "-m", command]


def _time(argv: list[str]) -> float:
  start = time.perf_counter()
  proc = subprocess.run([*argv, "--help"], capture_output=True, text=True, check=False, cwd=benchmarks.REPO)
  seconds = time.perf_counter() - start
  if proc.returncode:
    raise errors.Error(f"{' '.join(argv)} --help exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
  return seconds


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    print(benchmarks.machine())
    commands = {c: _argv(c) for c in _COMMANDS.value}
    times: dict[str, list[float]] = {c: [] for c in commands}
    for a in commands.values():  # warm the page cache: the figures are of a machine that has run them before
      _time(a)
    for _ in range(_ROUNDS.value):
      for c, a in commands.items():
        times[c].append(_time(a))
    width = max(len(c) for c in commands)
    print(f"--help, from a fresh process: median [min, max] of {_ROUNDS.value} interleaved rounds")
    for c, t in times.items():
      print(f"  {c:{width}s}  {statistics.median(t):.2f} s [{min(t):.2f}, {max(t):.2f}]")

  body()


if __name__ == "__main__":
  cli.run_app(main, __doc__)
