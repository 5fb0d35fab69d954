"""The training run's metric logger: step metrics fetched in windows, checked, averaged and written.

Step metrics stay on device until a window is flushed (every `train.log_every_steps`, before each evaluation and
each save), so the loop never waits on the host. A flush fetches them, stops the run on a non-finite loss,
gradient norm or parameter norm (`NonFiniteLossError`), and writes their mean to `W/metrics.jsonl` and
TensorBoard. Only process 0 writes; every process checks.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# Besides the losses, a non-finite value of these stops a run: a finite loss with a non-finite update (e.g. a
# huge learning rate) shows up in the norms one step earlier.
_GUARDED = ("grad_norm", "param_norm")


class NonFiniteLossError(FloatingPointError):
  """A train step produced a NaN or infinite loss; the run stops and writes no checkpoint."""


def host_float(x: jax.Array) -> float:
  """A replicated scalar on the host (reads this process's shard: works on every process of a multi-host run)."""
  return float(np.asarray(x.addressable_data(0)))


def host_int(x: jax.Array) -> int:
  """`host_float` for integers (the step counter)."""
  return int(np.asarray(x.addressable_data(0)))


def check_finite(step_metrics: list[tuple[int, dict[str, float]]]) -> None:
  """Raises NonFiniteLossError on the first step whose losses (or gradient/parameter norms) are not finite."""
  for step, m in step_metrics:
    bad = [k for k, v in m.items() if (k.startswith("loss") or k in _GUARDED) and not np.isfinite(v)]
    if bad:
      raise NonFiniteLossError(
        f"Non-finite loss at step {step}: {', '.join(f'{k}={m[k]}' for k in bad)}. The run stopped and wrote no "
        "checkpoint; lower the learning rate or check the inputs (the latest good checkpoint is unchanged)."
      )


class MetricLogger:
  """Owns `metrics.jsonl`, the TensorBoard writer, the progress bar and the window of pending step metrics."""

  def __init__(
    self,
    workdir: str,
    *,
    enabled: bool,
    log_every: int,
    total_steps: int,
    initial_step: int,
    progress_bar: bool,
    clock: Callable[[], float] | None = None,
  ):
    import time  # pylint: disable=g-import-not-at-top

    self._clock = clock or time.time
    self.enabled = enabled
    self.log_every = max(1, log_every)
    self._pending: list[tuple[int, dict[str, jax.Array]]] = []
    self._window = (self._clock(), initial_step)
    self._epoch = 0
    self._progress = None
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      if progress_bar:
        from tqdm import tqdm  # pylint: disable=g-import-not-at-top

        # In a log file (not a terminal) a line every 30 s is progress enough.
        self._progress = tqdm(
          total=total_steps,
          initial=initial_step,
          desc="train",
          unit="step",
          file=sys.stderr,
          mininterval=1.0 if sys.stderr.isatty() else 30.0,
          dynamic_ncols=True,
        )

  def record_step(self, step: int, metrics: dict[str, jax.Array], *, epoch: int) -> None:
    """Adds one step's (on-device) metrics to the window; flushes every `log_every` steps."""
    self._pending.append((step, metrics))
    self._epoch = epoch
    if self._progress is not None:
      self._progress.update(1)
    if step % self.log_every == 0:
      self.flush()

  def flush(self) -> dict[str, float]:
    """Fetches the pending step metrics, stops on a non-finite one, writes and returns their mean."""
    if not self._pending:
      return {}
    host = [(s, {k: host_float(v) for k, v in m.items()}) for s, m in self._pending]
    self._pending.clear()
    check_finite(host)
    mean = {f"train/{k}": float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
    last_step = host[-1][0]
    now = self._clock()
    t_window, step_window = self._window
    mean["train/steps_per_sec"] = (last_step - step_window) / max(now - t_window, 1e-9)
    self._window = (now, last_step)
    self.write(last_step, mean)
    if self._progress is not None:
      self._progress.set_postfix(
        loss=f"{mean['train/loss']:.4f}", steps_s=f"{mean['train/steps_per_sec']:.1f}", epoch=self._epoch, refresh=False
      )  # tqdm redraws at its own pace
    return mean

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """One row of scalars at `step` (process 0 only)."""
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k.replace("@", "_at_"), float(v), step)  # TensorBoard tags may not contain '@'

  def close(self) -> None:
    if self._progress is not None:
      self._progress.close()
    if self.enabled:
      self._jsonl.close()
      self._tb.close()
