"""Benchmarks: scripts that print figures (speed is measured here, never in tests)."""

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence

from emvgan_jax import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def machine() -> str:
  """One line naming the machine a figure comes from: CPU model, cores, the load when it started, JAX's devices.

  A figure from a shared machine means little without the load beside it (the 1-minute load average, against
  the number of cores).
  """
  import jax  # deferred: JAX loads once the flags are parsed

  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
  except OSError:
    pass
  load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"
  devices = jax.devices()
  return (
    f"{model}; {os.cpu_count()} cores; load average {load} (1, 5, 15 min) at the start; "
    f"JAX {jax.__version__}, {len(devices)} {devices[0].platform} device(s) ({devices[0].device_kind})"
  )


def positive_ints(flag: str, values: list[str], *, also: tuple[str, ...] = ()) -> list[int | str]:
  """A list flag's values as positive integers (words in `also` pass through), or a usage error naming the flag.

  Raises:
    emvgan_jax.tools.errors.UsageError: a value that is neither.
  """

  if not all(v in also or (v.isdigit() and int(v) >= 1) for v in values):
    extra = "".join(f" or {w!r}" for w in also)
    raise errors.UsageError(f"--{flag} must be positive integers{extra}, got {','.join(values)}")
  return [v if v in also else int(v) for v in values]


@contextlib.contextmanager
def checkout(revision: str) -> Iterator[str]:
  """A detached git worktree of `revision` in a temporary folder (removed afterwards), checked to import its own
  copy of the package.

  Raises:
    emvgan_jax.tools.errors.UsageError: git cannot check `revision` out.
    emvgan_jax.tools.errors.Error: the checkout would import the package from elsewhere.
  """

  folder = tempfile.mkdtemp(prefix="emvgan_against_")
  os.rmdir(folder)
  git = ["git", "-C", REPO]
  added = subprocess.run(
    [*git, "worktree", "add", "--detach", "--quiet", folder, revision], capture_output=True, text=True
  )
  if added.returncode:
    raise errors.UsageError(f"--revision={revision}: git cannot check it out ({added.stderr.strip().splitlines()[-1]})")
  try:
    code = "import emvgan_jax, os; print(os.path.dirname(os.path.abspath(emvgan_jax.__file__)))"
    where = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=True)
    if not where.stdout.strip().startswith(folder):
      raise errors.Error(f"the checkout of {revision} imports emvgan_jax from {where.stdout.strip()}, not its own")
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


def show_failure(stderr: str, lines: int = 40) -> None:
  """Prints the last `lines` lines of a failed run's stderr (to stderr), before the one-line error."""
  print("\n".join(stderr.rstrip().splitlines()[-lines:]), file=sys.stderr)
