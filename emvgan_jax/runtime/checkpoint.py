"""Checkpoints: the workdir is the unit of resumption.

Two Orbax `CheckpointManager`s live under `W/checkpoints/`: `latest` (the run's last saved state, for resuming)
and `best` (the state that scored best on the selection metric, for evaluation). Each checkpoint holds three
items: `state` (the train state: step, parameters, non-trained constants, optimizer states), `stats` (the
train-split standardisation statistics, without which the model cannot read new data) and `meta` (JSON: the
resolved config, the epoch, early-stopping bookkeeping, the model family).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

KINDS = ("latest", "best")


class CheckpointNotFoundError(FileNotFoundError):
  """There is no checkpoint where one was asked for."""


class Checkpoints:
  """The `latest` and `best` checkpoint managers of one workdir."""

  def __init__(self, workdir: str, *, read_only: bool = False):
    self.root = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._managers = {}
    for kind in KINDS:
      options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else 1,
        save_interval_steps=0 if read_only else 1,
        create=not read_only,
        read_only=read_only,
        # Saves are rare (on checkpoint boundaries) and tiny; a synchronous save cannot race the donated
        # state of the next step.
        enable_async_checkpointing=False,
      )
      path = os.path.join(self.root, kind)
      if read_only and not os.path.isdir(path):
        continue
      self._managers[kind] = ocp.CheckpointManager(path, options=options, item_names=("state", "stats", "meta"))

  def latest_step(self, kind: str = "latest") -> int | None:
    manager = self._managers.get(kind)
    return None if manager is None else manager.latest_step()

  def all_steps(self, kind: str) -> list[int]:
    """The steps saved under `kind` (empty when there is none)."""
    manager = self._managers.get(kind)
    return [] if manager is None else list(manager.all_steps())

  def save(self, kind: str, step: int, *, state: Any, stats: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Saves (step, state, stats, meta) as the `kind` checkpoint, replacing the previous one."""
    manager = self._managers[kind]
    if manager.latest_step() == step:
      return
    manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        stats=ocp.args.StandardSave(dict(stats)),
        meta=ocp.args.JsonSave(dict(meta)),
      ),
      force=True,
    )

  def restore_meta(self, kind: str, step: int | None = None) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    """Returns (step, meta, stats) of a checkpoint, without the state (cheap: no model needed)."""
    manager, step = self._locate(kind, step)
    restored = manager.restore(
      step, args=ocp.args.Composite(meta=ocp.args.JsonRestore(), stats=ocp.args.StandardRestore())
    )
    stats = {k: np.asarray(v) for k, v in restored["stats"].items()}
    return step, dict(restored["meta"]), stats

  def restore(
    self, kind: str, abstract_state: Any, step: int | None = None
  ) -> tuple[int, Any, dict[str, np.ndarray], dict[str, Any]]:
    """Restores (step, state, stats, meta); `abstract_state` gives shapes, dtypes and shardings of the state."""
    manager, step = self._locate(kind, step)
    restored = manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        stats=ocp.args.StandardRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
    stats = {k: np.asarray(v) for k, v in restored["stats"].items()}
    return step, restored["state"], stats, dict(restored["meta"])

  def _locate(self, kind: str, step: int | None):
    if kind not in KINDS:
      raise ValueError(f"Unknown checkpoint kind {kind!r}: use one of {KINDS}")
    manager = self._managers.get(kind)
    steps = self.all_steps(kind)
    if not steps:
      raise CheckpointNotFoundError(
        f"No '{kind}' checkpoint in {self.root}: train first with "
        f"`python -m emvgan_jax.main --config=... --workdir={os.path.dirname(self.root)}`"
      )
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise CheckpointNotFoundError(f"No '{kind}' checkpoint at step {step} in {self.root}; it has steps {steps}")
    return manager, step

  def wait(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()


class RunCheckpointer:
  """A training run's checkpoints: the `latest` state and the selection's `best` copy, saved together.

  Every save writes `latest` at the current step and, when the selection holds a best copy, `best` at its step
  (an unchanged `best` is not rewritten). Both carry the train-split statistics and the same metadata: the
  run's static description (config, family, dataset, seed, ...) plus the selection's bookkeeping.
  """

  def __init__(self, workdir: str, *, stats: Mapping[str, np.ndarray], run_meta: Mapping[str, Any]) -> None:
    self.checkpoints = Checkpoints(workdir)
    self._stats = dict(stats)
    self._run_meta = dict(run_meta)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of the `latest` checkpoint, or None for a fresh run."""
    if self.checkpoints.latest_step() is None:
      return None
    _, state, _, meta = self.checkpoints.restore("latest", abstract_state)
    return state, meta

  def save(self, step: int, state: Any, *, selection: Any, done: bool) -> None:
    """Saves `latest` (and the selection's best copy as `best`); `done`: early stopping fired."""
    # `stopped_early` means early stopping fired; reaching max_steps does not stop a resumed, longer run.
    meta = {"selection": selection.to_json(), "stopped_early": done, **self._run_meta}
    self.checkpoints.save("latest", step, state=state, stats=self._stats, meta=meta)
    if selection.best is not None:
      best_step, best_state = selection.best
      self.checkpoints.save("best", best_step, state=best_state, stats=self._stats, meta=meta)

  def restore_best(self, abstract_state: Any) -> tuple[int, Any]:
    """(step, state) of the `best` checkpoint, after waiting for every save to finish."""
    self.checkpoints.wait()
    best_step, best_state, _, _ = self.checkpoints.restore("best", abstract_state)
    return best_step, best_state

  def close(self) -> None:
    self.checkpoints.close()
