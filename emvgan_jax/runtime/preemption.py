"""Stopping a run cleanly on SIGTERM (preemption, `kill`) or SIGINT (Ctrl-C).

`Interrupts` replaces the two handlers while the training loop runs: the first signal only sets a flag, which the
loop reads after every step (`requested(step)`); the loop then saves `latest` at that step, closes its logs and
raises `Interrupted`, which `main` prints as one line before exiting with 128 + the signal number. A second
Ctrl-C while the save is running interrupts as usual.

On several processes the decision is taken together, by the coordination service's preemption notice (the one
Orbax uses): `jax.distributed.initialize` installs a SIGTERM handler that tells the service, and
`jax.experimental.multihost_utils.reached_preemption_sync_point` then makes every process stop at the same step,
one past the furthest any process had reached. So there SIGTERM's handler is left to JAX (replacing it would
swallow the notice, and the run would never stop), and a Ctrl-C is turned into a SIGTERM to this process, so that
it too stops every process together.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

import jax
from jax._src import distributed
from jax.experimental import multihost_utils

NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}


class Interrupted(Exception):
  """A run stopped by a signal after saving `latest`; rerunning the same command continues it."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step, self.workdir = signum, step, workdir
    super().__init__(
      f"stopped by {NAMES.get(signum, signum)} at step {step}: saved the latest checkpoint in {workdir}; rerun the "
      "same command to continue"
    )

  @property
  def exit_code(self) -> int:
    return 128 + int(self.signum)


class Interrupts:
  """Context manager: while active, SIGTERM and SIGINT set `signum` instead of killing the process."""

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    if self.signum is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now
      raise KeyboardInterrupt
    self.signum = signum

  def _handle_multiprocess(self, signum: int, frame: FrameType | None) -> None:
    self._handle(signum, frame)
    os.kill(os.getpid(), signal.SIGTERM)  # to JAX's handler: the coordination service tells every process

  def __enter__(self) -> Interrupts:
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
      if jax.process_count() > 1:
        if _preemption_service():
          self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle_multiprocess)
        else:
          logging.warning(
            "jax_enable_preemption_service is off: SIGTERM and SIGINT stop this run without saving (a process "
            "cannot save alone, the others would wait for it)"
          )
      else:
        for sig in NAMES:
          self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc: object) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (on several processes: whether every process reaches the same verdict)."""
    if jax.process_count() > 1:
      if _preemption_service() and multihost_utils.reached_preemption_sync_point(step):
        self.signum = self.signum or signal.SIGTERM
        return True
      return False
    return self.signum is not None


def _preemption_service() -> bool:
  """Whether `jax.distributed.initialize` started the coordination service's preemption notice."""
  try:
    return distributed.global_state.preemption_sync_manager is not None
  except (ImportError, AttributeError):  # another JAX: its config says whether initialize() starts the service
    return bool(jax.config.jax_enable_preemption_service)
