"""Checkpoints: the workdir is the unit of resumption.

Two Orbax `CheckpointManager`s live under `W/checkpoints/`: `latest` (the run's last saved state, for resuming)
and `best` (the state that scored best on the selection metric, for evaluation). Each checkpoint holds three
items: `state` (the train state: step, parameters, non-trained constants, optimizer states), `stats` (the
train-split standardisation statistics, without which the model cannot read new data) and `meta` (JSON: the
resolved config, the epoch, early-stopping bookkeeping, the model family).

Integrity: after each save, the SHA-256 of every file of the saved step is written to
`W/checkpoints/<kind>.sha256.json` (atomically, by rename), and every restore checks the files against it first,
so a damaged, truncated or deleted file is a one-line `CheckpointCorruptError` naming it, never a silent load of
wrong values. As a set: a run saves `best` before `latest`, so whatever instant it dies at, `latest`'s record of
the best step is never ahead of the `best` checkpoint on disk, and the rerun of the same command replays to the
same best (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

KINDS = ("latest", "best")


class CheckpointError(Exception):
  """A checkpoint cannot be used; the message names it and says what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """There is no checkpoint where one was asked for."""


class CheckpointCorruptError(CheckpointError):
  """A checkpoint's files are not the ones that were written (damaged, truncated or deleted)."""


def _file_digests(directory: str) -> dict[str, str]:
  out = {}
  for base, _, names in os.walk(directory):
    for name in sorted(names):
      path = os.path.join(base, name)
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      out[os.path.relpath(path, directory)] = h.hexdigest()
  return out


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
    manager.wait_until_finished()
    if _is_lead():
      self._write_manifest(kind, step)

  def _manifest_path(self, kind: str) -> str:
    return os.path.join(self.root, f"{kind}.sha256.json")

  def _step_dir(self, kind: str, step: int) -> str:
    return os.path.join(self.root, kind, str(step))

  def _write_manifest(self, kind: str, step: int) -> None:
    record = {"step": int(step), "files": _file_digests(self._step_dir(kind, step))}
    tmp = self._manifest_path(kind) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(record, f, indent=1)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, self._manifest_path(kind))

  def verify(self, kind: str, step: int) -> None:
    """Checks the files of checkpoint (`kind`, `step`) against the checksums written with them.

    A checkpoint with no record (saved before checksums existed, or a crash between the save and its record) is
    accepted with a warning: Orbax commits a save by renaming its directory, so it is complete.

    Raises:
      CheckpointCorruptError: a file is missing or its contents differ from what was written.
    """
    try:
      with open(self._manifest_path(kind), encoding="utf-8") as f:
        record = json.load(f)
    except FileNotFoundError:
      record = None
    except (OSError, ValueError) as e:
      raise CheckpointCorruptError(f"{self._manifest_path(kind)} is unreadable ({e}); {self._advice(kind)}") from None
    if record is None or record.get("step") != step:
      logging.warning("No checksums recorded for the '%s' checkpoint at step %d: not verified", kind, step)
      return
    directory = self._step_dir(kind, step)
    on_disk = _file_digests(directory) if os.path.isdir(directory) else {}
    for rel, digest in sorted(record["files"].items()):
      path = os.path.join(directory, rel)
      if rel not in on_disk:
        raise CheckpointCorruptError(f"{path} is missing from the '{kind}' checkpoint; {self._advice(kind)}")
      if on_disk[rel] != digest:
        raise CheckpointCorruptError(
          f"{path} is damaged (its checksum differs from the one written with it); {self._advice(kind)}"
        )

  def _advice(self, kind: str) -> str:
    other = "best" if kind == "latest" else "latest"
    workdir = os.path.dirname(self.root)
    return f"use the other checkpoint (--checkpoint={other}) if it is intact, or remove {workdir} and train again"

  def restore_meta(self, kind: str, step: int | None = None) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    """Returns (step, meta, stats) of a checkpoint, without the state (cheap: no model needed)."""
    manager, step = self._locate(kind, step)
    self.verify(kind, step)
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
    self.verify(kind, step)
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


def _is_lead() -> bool:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index() == 0


class RunCheckpointer:
  """A training run's checkpoints: the `latest` state and the selection's `best` copy, saved together.

  Every save writes, when the selection holds a best copy, `best` at its step (an unchanged `best` is not
  rewritten), and then `latest` at the current step: in that order, `latest`'s record of the best step never
  points past the `best` on disk, whenever the process dies. Both carry the train-split statistics and the same
  metadata: the run's static description (config, family, dataset, seed, ...) plus the selection's bookkeeping.
  """

  def __init__(self, workdir: str, *, stats: Mapping[str, np.ndarray], run_meta: Mapping[str, Any]) -> None:
    self.checkpoints = Checkpoints(workdir)
    self._stats = dict(stats)
    self._run_meta = dict(run_meta)

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of the `latest` checkpoint, or None for a fresh run.

    Raises:
      CheckpointCorruptError: a damaged file; or a workdir whose checkpoints are partly gone (a `best` without a
        `latest`, or a `latest` whose best step has no `best` on disk), which is never silently retrained over.
    """
    latest, best = self.checkpoints.latest_step(), self.checkpoints.latest_step("best")
    workdir = self.workdir
    if latest is None:
      if best is not None:
        raise CheckpointCorruptError(
          f"{workdir} has a 'best' checkpoint (step {best}) but no 'latest' one to resume from: evaluate it as it "
          f"is, or remove {workdir} (or pass --restart) to train again"
        )
      return None
    _, state, _, meta = self.checkpoints.restore("latest", abstract_state)
    recorded = (meta.get("selection") or {}).get("best_step")
    if recorded is not None and (best is None or best < recorded):
      raise CheckpointCorruptError(
        f"the 'latest' checkpoint of {workdir} (step {latest}) records its best state at step {recorded}, but "
        f"{'there is no best checkpoint' if best is None else f'the best checkpoint is at step {best}'}: remove "
        f"{workdir} (or pass --restart) to train again"
      )
    return state, meta

  @property
  def workdir(self) -> str:
    return os.path.dirname(self.checkpoints.root)

  def save(self, step: int, state: Any, *, selection: Any, done: bool, extra: Mapping[str, Any] | None = None) -> None:
    """Saves the selection's best copy as `best`, then `latest`; `done`: early stopping fired; `extra`: more
    metadata (the logger's unfinished window)."""
    # `stopped_early` means early stopping fired; reaching max_steps does not stop a resumed, longer run.
    meta = {"selection": selection.to_json(), "stopped_early": done, **(extra or {}), **self._run_meta}
    if selection.best is not None:
      best_step, best_state = selection.best
      self.checkpoints.save("best", best_step, state=best_state, stats=self._stats, meta=meta)
    self.checkpoints.save("latest", step, state=state, stats=self._stats, meta=meta)

  def restore_best(self, abstract_state: Any, expected_step: int | None = None) -> tuple[int, Any]:
    """(step, state) of the `best` checkpoint, after waiting for every save to finish.

    Raises:
      CheckpointCorruptError: the best checkpoint on disk is not at `expected_step` (the selection's best step).
    """
    self.checkpoints.wait()
    best_step, best_state, _, _ = self.checkpoints.restore("best", abstract_state)
    if expected_step is not None and best_step != expected_step:
      raise CheckpointCorruptError(
        f"the best checkpoint of {self.workdir} is at step {best_step}, but the selection's best step is "
        f"{expected_step}: its checkpoints do not belong to one run; remove {self.workdir} and train again"
      )
    return best_step, best_state

  def close(self) -> None:
    self.checkpoints.close()
