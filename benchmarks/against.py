"""Any benchmark command, this code against another revision, in interleaved rounds.

  python -m benchmarks.against --revision=REV --rounds=5 \
      --figure='numpy batches \\(the loader\\): ([0-9,.]+) examples/s' -- \
      -m benchmarks.input_pipeline --dataset=features --data_dir=F --manual_dir=S --stream_above_mb=0

Everything after `--` is a Python command line, run in a fresh process in this repository and in a checkout of
REV (a git worktree in a temporary folder, whose package the command imports instead of this one), one after
the other in every round. `--figure` is a regular expression whose first group is the figure each run prints
(commas are dropped); the script prints every run's figure, each side's median [min, max], and the ratio
this code / REV: the median of the rounds' ratios, with min and max. Paths in the command are taken from the
directory the script is started in: one outside the repository is passed as an absolute path, one inside it
relative to the repository's root, so that each side reads its own copy (configs/x.py).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence

from absl import flags

import benchmarks
from emvgan_jax import errors
from emvgan_jax.tools import cli

_REVISION = flags.DEFINE_string("revision", None, "The git revision to time against this code.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds (each runs both sides once).")
_FIGURE = flags.DEFINE_string("figure", None, "A regular expression; its first group is the figure of a run.")


def _absolute(args: Sequence[str], repo: str) -> list[str]:
  """The command with every flag value or argument that names an existing relative path rewritten for runs
  started in each side's root: absolute outside the repository, relative to its root inside it."""
  out = []
  for arg in args:
    head, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if value and not os.path.isabs(value) and os.path.exists(value):
      path = os.path.abspath(value)
      value = os.path.relpath(path, repo) if path.startswith(repo + os.sep) else path
    out.append(f"{head}{eq}{value}" if eq else value)
  return out


def _figure(output: str, pattern: re.Pattern[str], side: str) -> float:
  m = pattern.search(output)
  if not m:
    benchmarks.show_failure(output)
    raise errors.Error(f"the run of {side} printed nothing matching --figure (its last output is above)")
  return float(m.group(1).replace(",", ""))


def main(argv: Sequence[str]) -> None:
  _run(argv)  # inside the one error boundary: cli.run_app


def _run(argv: Sequence[str]) -> None:
  command = _absolute(argv[1:], benchmarks.REPO)
  if not command or not _REVISION.value or not _FIGURE.value:
    raise errors.UsageError("give --revision, --figure and the command to run after --")
  if _ROUNDS.value < 1:
    raise errors.UsageError(f"--rounds must be a positive integer, got {_ROUNDS.value}")
  try:
    pattern = re.compile(_FIGURE.value)
  except re.error as e:
    raise errors.UsageError(f"--figure is not a regular expression: {e}") from None
  print(benchmarks.machine(), flush=True)
  print(f"  command: python {' '.join(command)}", flush=True)
  figures: dict[str, list[float]] = {"this code": [], _REVISION.value: []}
  with benchmarks.checkout(_REVISION.value) as other:
    sides = [("this code", benchmarks.REPO), (_REVISION.value, other)]
    for k in range(_ROUNDS.value):
      for side, cwd in sides if k % 2 == 0 else sides[::-1]:  # who goes first alternates by round
        proc = subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode:
          benchmarks.show_failure(proc.stderr)
          raise errors.Error(f"the run of {side} failed (its last output is above)")
        figures[side].append(_figure(proc.stdout + proc.stderr, pattern, side))
        print(f"  round {k + 1}/{_ROUNDS.value} {side:>10}: {figures[side][-1]:,.6g}", flush=True)
  for side, values in figures.items():
    v = sorted(values)
    print(f"  {side:>10}: median {statistics.median(v):,.6g} [{v[0]:,.6g}, {v[-1]:,.6g}]")
  print("  " + benchmarks.ratio_line("figure", figures["this code"], figures[_REVISION.value], _REVISION.value))


if __name__ == "__main__":
  from emvgan_jax.tools import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
