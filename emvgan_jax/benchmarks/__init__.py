"""Benchmarks: scripts that print figures (speed is measured here, never in tests)."""

import os
import platform


def machine() -> str:
  """One line naming the machine a figure comes from: CPU model, cores, the load when it started, JAX's devices.

  A figure from a shared machine means little without the load beside it (the 1-minute load average, against
  the number of cores).
  """
  import jax  # pylint: disable=g-import-not-at-top

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
    emvgan_jax.runtime.cli.UsageError: a value that is neither.
  """
  from emvgan_jax.runtime import cli  # pylint: disable=g-import-not-at-top

  if not all(v in also or (v.isdigit() and int(v) >= 1) for v in values):
    extra = "".join(f" or {w!r}" for w in also)
    raise cli.UsageError(f"--{flag} must be positive integers{extra}, got {','.join(values)}")
  return [v if v in also else int(v) for v in values]
