"""Any benchmark command, this code against another revision, in interleaved rounds.

  python -m emvgan_jax.benchmarks.against --revision=REV --rounds=5 \
      --figure='numpy batches \\(the loader\\): ([0-9,.]+) examples/s' -- \
      -m emvgan_jax.benchmarks.input_pipeline --dataset=features --data_dir=F --manual_dir=S --stream_above_mb=0

Everything after `--` is a Python command line, run in a fresh process in this repository and in a checkout of
REV (a git worktree in a temporary folder, whose package the command imports instead of this one), one after
the other in every round. `--figure` is a regular expression whose first group is the figure each run prints
(commas are dropped); the script prints every run's figure, each side's median [min, max], and the ratio
this code / REV: the median of the rounds' ratios, with min and max. Relative paths in the command are taken
from the directory the script is started in.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_REVISION = flags.DEFINE_string("revision", None, "The git revision to time against this code.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved rounds (each runs both sides once).")
_FIGURE = flags.DEFINE_string("figure", None, "A regular expression; its first group is the figure of a run.")


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[str]:
  """A detached git worktree of `revision` in a temporary folder (removed afterwards), checked to import its own
  copy of the package.

  Raises:
    emvgan_jax.runtime.cli.UsageError: git cannot check `revision` out.
    emvgan_jax.runtime.cli.ToolError: the checkout would import the package from elsewhere.
  """
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  folder = tempfile.mkdtemp(prefix="emvgan_against_")
  os.rmdir(folder)
  git = ["git", "-C", REPO]
  added = subprocess.run(
    [*git, "worktree", "add", "--detach", "--quiet", folder, revision], capture_output=True, text=True
  )
  if added.returncode:
    raise cli.UsageError(f"--revision={revision}: git cannot check it out ({added.stderr.strip().splitlines()[-1]})")
  try:
    code = "import emvgan_jax, os; print(os.path.dirname(os.path.abspath(emvgan_jax.__file__)))"
    where = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    if not where.stdout.strip().startswith(folder):
      raise cli.ToolError(f"the checkout of {revision} imports emvgan_jax from {where.stdout.strip()}, not its own")
    yield folder
  finally:
    subprocess.run([*git, "worktree", "remove", "--force", folder], check=False)


def ratio_line(name: str, mine: Sequence[float], theirs: Sequence[float], against: str) -> str:
  """'name: this code / REV: 0.73x [0.71, 0.83] (...)' from the paired figures of interleaved rounds."""
  ratios = sorted(a / b for a, b in zip(mine, theirs))
  return (
    f"{name}: this code / {against}: {statistics.median(ratios):.2f}x [{ratios[0]:.2f}, {ratios[-1]:.2f}] "
    f"(median [min, max] of {len(ratios)} interleaved rounds)"
  )


def _absolute(args: Sequence[str]) -> list[str]:
  """The command with every flag value or argument that names an existing relative path made absolute (the
  runs start in other directories)."""
  out = []
  for arg in args:
    head, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if value and not os.path.isabs(value) and os.path.exists(value):
      value = os.path.abspath(value)
    out.append(f"{head}{eq}{value}" if eq else value)
  return out


def _figure(output: str, pattern: re.Pattern[str], side: str) -> float:
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  m = pattern.search(output)
  if not m:
    raise cli.ToolError(f"the run of {side} printed nothing matching --figure; its last output:\n{output[-2000:]}")
  return float(m.group(1).replace(",", ""))


def main(argv: Sequence[str]) -> None:
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  cli.run_tool(lambda: _run(argv))


def _run(argv: Sequence[str]) -> None:
  from emvgan_jax import benchmarks  # pylint: disable=g-import-not-at-top
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  command = _absolute(argv[1:])
  if not command or not _REVISION.value or not _FIGURE.value:
    raise cli.UsageError("give --revision, --figure and the command to run after --")
  if _ROUNDS.value < 1:
    raise cli.UsageError(f"--rounds must be a positive integer, got {_ROUNDS.value}")
  try:
    pattern = re.compile(_FIGURE.value)
  except re.error as e:
    raise cli.UsageError(f"--figure is not a regular expression: {e}") from None
  print(benchmarks.machine(), flush=True)
  print(f"  command: python {' '.join(command)}", flush=True)
  figures: dict[str, list[float]] = {"this code": [], _REVISION.value: []}
  with checkout(_REVISION.value) as other:
    for k in range(_ROUNDS.value):
      for side, cwd in (("this code", REPO), (_REVISION.value, other)):
        proc = subprocess.run([sys.executable, *command], cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode:
          raise cli.ToolError(f"the run of {side} failed: {proc.stderr.strip().splitlines()[-1:]}")
        figures[side].append(_figure(proc.stdout + proc.stderr, pattern, side))
        print(f"  round {k + 1}/{_ROUNDS.value} {side:>10}: {figures[side][-1]:,.6g}", flush=True)
  for side, values in figures.items():
    v = sorted(values)
    print(f"  {side:>10}: median {statistics.median(v):,.6g} [{v[0]:,.6g}, {v[-1]:,.6g}]")
  print("  " + ratio_line("figure", figures["this code"], figures[_REVISION.value], _REVISION.value))


if __name__ == "__main__":
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  cli.run_app(main, __doc__)
