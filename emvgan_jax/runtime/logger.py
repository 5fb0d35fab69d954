"""The training run's metric logger: step metrics fetched in windows, checked, averaged and written.

Step metrics stay on device until a window is flushed (every `train.log_every_steps`, before each evaluation and
each save), so the loop never waits on the host. A flush fetches them, stops the run on a non-finite loss,
gradient norm or parameter norm (`NonFiniteLossError`), and writes their mean to `W/metrics.jsonl` and
TensorBoard. Only process 0 writes; every process checks.

A save only checks (`check`): the steps of an unfinished window stay pending, as host values, and travel in the
checkpoint (`pending_json` / `restore_pending`), so the rows written are the same wherever a run was saved,
interrupted or resumed. On resume the log is cut back to the restored step: `metrics.jsonl` keeps its rows up
to that step, and TensorBoard purges the events after it, so every step appears once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from emvgan_jax import atomic, errors

# The progress bar of a run that may stop early: steps, time and rate, no total, percentage or ETA.
EARLY_STOPPING_BAR = "{desc}: {n_fmt} steps (at most {total_fmt}) [{elapsed}, {rate_fmt}{postfix}]"

# Besides the losses, a non-finite value of these stops a run: a finite loss with a non-finite update (e.g. a
# huge learning rate) shows up in the norms one step earlier.
_GUARDED = ("grad_norm", "param_norm")


class NonFiniteLossError(errors.Error, FloatingPointError):
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


def _summary_writer_class() -> Any:
  """tensorboardX's `SummaryWriter`, imported without PyTorch.

  tensorboardX's writer imports torch wherever it is installed (the `extract` extra installs it), only to accept
  torch tensors, which this project never passes; that import was about 2 s of every run's start on 2 cores
  (`python -X importtime -m emvgan_jax.main ...`). Unless torch is already loaded, it is hidden while
  tensorboardX is first imported (an absent torch is a case tensorboardX handles). This happens once, as the
  run's logger is made, before any thread of the run could be importing torch itself.
  """
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
    try:
      import tensorboardX  # noqa: F401  deferred: tensorboardX, imported with PyTorch hidden (above)
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter  # deferred: tensorboardX, imported with PyTorch hidden (above)

  return SummaryWriter


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
    early_stopping: bool = False,
    clock: Callable[[], float] | None = None,
  ):
    self._clock = clock or time.time
    self.enabled = enabled
    self.log_every = max(1, log_every)
    self._pending: list[tuple[int, dict[str, Any]]] = []
    self._window = (self._clock(), initial_step)
    self._epoch = 0
    self._selection = ""
    self._last_mean: dict[str, float] | None = None
    self._progress = None
    if enabled:
      summary_writer = _summary_writer_class()
      path = os.path.join(workdir, "metrics.jsonl")
      _cut_jsonl(path, initial_step)
      self._jsonl = open(path, "a", encoding="utf-8")
      # Events of a step after the restored one (written before an interruption) are purged from the views.
      self._tb = summary_writer(os.path.join(workdir, "tensorboard"), purge_step=initial_step + 1)
      if progress_bar:
        # In a log file (not a terminal) a line every 30 s is progress enough. With early stopping the run ends
        # when the selection stops improving, not at `total_steps`: no percentage and no ETA that would lie
        # ("5%, 6 min left" for a run that stops in seconds); the postfix shows evaluations since the best.
        self._progress = tqdm(
          total=total_steps,
          initial=initial_step,
          desc="train",
          unit="step",
          file=sys.stderr,
          mininterval=1.0 if sys.stderr.isatty() else 30.0,
          dynamic_ncols=True,
          bar_format=EARLY_STOPPING_BAR if early_stopping else None,
        )

  def record_step(self, step: int, metrics: dict[str, jax.Array], *, epoch: int) -> None:
    """Adds one step's (on-device) metrics to the window; flushes every `log_every` steps."""
    self._pending.append((step, metrics))
    self._epoch = epoch
    if self._progress is not None:
      self._progress.update(1)
    if step % self.log_every == 0:
      self.flush()

  def check(self) -> None:
    """Fetches the pending step metrics and stops on a non-finite one; they stay pending (not written)."""
    self._pending = [
      (s, {k: v if isinstance(v, float) else host_float(v) for k, v in m.items()}) for s, m in self._pending
    ]
    check_finite(self._pending)

  def pending_json(self) -> list[list[Any]]:
    """The unfinished window as JSON (checked first), for a checkpoint's metadata."""
    self.check()
    return [[s, m] for s, m in self._pending]

  def restore_pending(self, pending: list[list[Any]] | None) -> None:
    """Restores the unfinished window a checkpoint carried (a resumed run then writes the rows it would have)."""
    self._pending = [(int(s), {k: float(v) for k, v in m.items()}) for s, m in (pending or [])]

  def flush(self) -> dict[str, float]:
    """Fetches the pending step metrics, stops on a non-finite one, writes and returns their mean."""
    if not self._pending:
      return {}
    self.check()
    host = list(self._pending)
    self._pending.clear()
    mean = {f"train/{k}": float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
    last_step = host[-1][0]
    now = self._clock()
    t_window, step_window = self._window
    mean["train/steps_per_sec"] = (last_step - step_window) / max(now - t_window, 1e-9)
    self._window = (now, last_step)
    self.write(last_step, mean)
    if self._progress is not None:
      self._last_mean = mean
      self._progress.set_postfix_str(self._postfix(), refresh=False)  # tqdm redraws at its own pace
    return mean

  def _postfix(self) -> str:
    mean, parts = self._last_mean, []
    if mean is not None:
      parts = [f"loss={mean['train/loss']:.4f}", f"steps/s={mean['train/steps_per_sec']:.1f}", f"epoch={self._epoch}"]
    return ", ".join(parts + ([self._selection] if self._selection else []))

  def show_selection(self, *, best_step: int | None, bad_evals: int, patience: int) -> None:
    """The early-stopping state on the progress bar: the best step and evaluations since it, of `patience`."""
    if best_step is None:
      return
    self._selection = f"best@{best_step}, {bad_evals}/{patience} evals since" if patience else f"best@{best_step}"
    if self._progress is not None:
      self._progress.set_postfix_str(self._postfix(), refresh=False)

  def write(self, step: int, scalars: dict[str, Any]) -> None:
    """One row of scalars at `step` (process 0 only)."""
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self._jsonl.flush()
    from tensorboardX.proto.summary_pb2 import Summary  # deferred: tensorboardX, imported with PyTorch hidden (above)

    # The tags are metrics.jsonl's and results.json's keys, `hit@1` included: tensorboardX's add_scalar would
    # rewrite '@' to '_' (a TensorFlow op-name rule; TensorBoard itself takes any tag), so the proto is built here.
    values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._tb._get_file_writer().add_summary(Summary(value=values), step)  # pylint: disable=protected-access

  def log_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """The run's hyper-parameters for TensorBoard's HPARAMS tab (the experiment and the session start), with
    `metrics` (scalar tags this run writes) as the columns to compare runs by. Process 0, once per workdir."""
    if not self.enabled:
      return
    from tensorboardX.summary import hparams as hparams_summaries  # deferred: tensorboardX (see above)

    experiment, session_start, _ = hparams_summaries(dict(hparams), {m: 0.0 for m in metrics})
    writer = self._tb._get_file_writer()  # pylint: disable=protected-access
    writer.add_summary(experiment)
    writer.add_summary(session_start)

  def end_hparams_session(self) -> None:
    """Marks the HPARAMS session finished (a run that stops early by error stays 'running' there)."""
    if not self.enabled:
      return
    from tensorboardX.summary import hparams as hparams_summaries  # deferred: tensorboardX (see above)

    *_, session_end = hparams_summaries({}, {})
    self._tb._get_file_writer().add_summary(session_end)  # pylint: disable=protected-access

  def close(self) -> None:
    """Closes the files; pending steps are dropped (the last save carried them, and a finished run flushed)."""
    if self._progress is not None:
      self._progress.close()
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def flat_hparams(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """A nested config dict as dotted keys -> str, bool, int or float (lists and None as their text)."""
  out: dict[str, Any] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(flat_hparams(value, name + "."))
    elif isinstance(value, (str, bool, int, float)):
      out[name] = value
    else:
      out[name] = str(value)
  return out


def _cut_jsonl(path: str, last_step: int) -> None:
  """Keeps the rows of `path` up to `last_step` (atomically: a copy renamed over it); no-op without the file."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:  # a line cut short by a crash
      continue
    if row.get("step", 0) <= last_step:
      keep.append(line if line.endswith("\n") else line + "\n")
  if len(keep) == len(lines):
    return
  atomic.write_text(path, "".join(keep))
