"""Entry point: `python -m emvgan_jax.main --config=configs/emomv_c.py --workdir=W [--config.x=y ...]`.

Thin on purpose: flags, the distributed runtime when asked, a device log, then `train.train_and_evaluate`.
"""

import logging
import os

from absl import app, flags
from ml_collections import config_flags

from emvgan_jax.tools import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Experiment config file, e.g. configs/emomv_c.py (fields overridable as --config.x=y).",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (resumed if present).")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed",
  os.environ.get("EMVGAN_DISTRIBUTED", "") not in ("", "0"),
  "Call jax.distributed.initialize() (multi-host: Cloud TPU pods, or several GPU hosts). Also set by "
  "EMVGAN_DISTRIBUTED=1; coordinator address, process count and id come from the environment or the TPU "
  "metadata as jax.distributed.initialize() reads them.",
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "host:port of process 0, for --distributed where the environment does not say "
  "(e.g. several GPU hosts, or several processes on loopback standing in for hosts).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Process count, with --coordinator_address.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, with --coordinator_address.")
_CACHE = flags.DEFINE_string(
  "compilation_cache_dir",
  cli.DEFAULT_COMPILATION_CACHE,
  "JAX persistent compilation cache: a rerun, a resumed run or another seed skips XLA compilation. Empty disables it.",
)
_RESTART = flags.DEFINE_bool(
  "restart",
  False,
  "Delete what --workdir holds (checkpoints, logs, results) and start over. Without it, a workdir holding a run of "
  "another config is refused.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.setup_logging()  # quiets Orbax, TFDS and JAX INFO chatter on absl's handler
  import jax  # deferred: JAX loads once the flags are parsed (and XLA's environment flags are set)

  cli.enable_compilation_cache(_CACHE.value)
  if _DISTRIBUTED.value:
    # Only the CPU backend reads this: CPU processes (loopback stand-ins for hosts) need a collectives library.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
    )
  # Deferred past the distributed start, which must come before anything touches a device.
  from emvgan_jax import train  # deferred: see the line above

  logging.info(
    "JAX process %d of %d; %d local / %d global devices: %s",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices(),
  )
  # Errors, a stop by a signal after saving, Ctrl-C: one line each (cli.run_app runs this inside errors.guard).
  train.run(_CONFIG.value, _WORKDIR.value, restart=_RESTART.value)


def run() -> None:
  """The console script `emvgan-train` (the same as `python -m emvgan_jax.main`)."""
  cli.run_app(main, __doc__)


if __name__ == "__main__":
  run()
