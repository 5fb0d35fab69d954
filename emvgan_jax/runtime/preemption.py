"""Stopping a run cleanly on SIGTERM (preemption, `kill`) or SIGINT (Ctrl-C).

`Interrupts` replaces the two handlers while the training loop runs: the first signal only sets a flag, which the
loop reads after every step (`requested(step)`); the loop then saves `latest` at that step, closes its logs and
raises `Interrupted`, which `main` prints as one line before exiting with 128 + the signal number. A second
Ctrl-C while the save is running interrupts as usual. On several processes the decision is taken together:
`jax.experimental.multihost_utils.reached_preemption_sync_point`, the coordination service's preemption
notice that Orbax uses, makes every process stop at the same step (JAX forwards SIGTERM to it).
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import jax

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

  def __enter__(self) -> Interrupts:
    import threading  # pylint: disable=g-import-not-at-top

    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
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
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signum = self.signum or signal.SIGTERM
          return True
      except RuntimeError:  # no preemption service (jax.distributed not initialised with it)
        pass
      return False
    return self.signum is not None
