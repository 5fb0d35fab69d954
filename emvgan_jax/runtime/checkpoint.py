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
same best (docs/architecture.md). A save that the disk cannot hold is refused before it writes anything, and a
write that fails inside a save is one `CheckpointSaveError` line with nothing of it left behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from emvgan_jax import errors
from emvgan_jax.data import digest

KINDS = ("latest", "best")


class CheckpointError(errors.Error):
  """A checkpoint cannot be used; the message names it and says what to do."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
  """There is no checkpoint where one was asked for."""


class CheckpointCorruptError(CheckpointError):
  """A checkpoint's files are not the ones that were written (damaged, truncated or deleted)."""


class CheckpointSaveError(CheckpointError):
  """A checkpoint could not be written (a full disk, a permission); what it had written is removed."""


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _os_reason(e: BaseException) -> str | None:
  """The operating system's reason behind a failed write: an OSError's, or the errno TensorStore quotes in its
  message (`[os_error_code='28']`); None for any other failure (a bug, which keeps its traceback)."""
  if isinstance(e, OSError) and e.errno is not None:
    return e.strerror or os.strerror(e.errno)
  match = _OS_ERROR_CODE.search(str(e))
  return os.strerror(int(match.group(1))) if match else None


class _HoldOrbaxErrors(logging.Filter):
  """While a save runs, keeps Orbax's own error records (one traceback per writer thread) off the log: a failed
  save is reported once, as a `CheckpointSaveError`. `release()` logs them after all, for any other failure."""

  def __init__(self) -> None:
    super().__init__()
    self.held: list[logging.LogRecord] = []

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR and "/orbax/" in record.pathname:
      self.held.append(record)
      return False
    return True

  def __enter__(self) -> _HoldOrbaxErrors:
    for handler in logging.getLogger().handlers:
      handler.addFilter(self)
    return self

  def __exit__(self, *exc: object) -> None:
    for handler in logging.getLogger().handlers:
      handler.removeFilter(self)

  def release(self) -> None:
    """Logs the held records (call it once the filter is off the handlers, i.e. after the `with` block)."""
    held, self.held = self.held, []
    for record in held:
      logging.getLogger().handle(record)


def _file_digests(directory: str) -> dict[str, str]:
  out = {}
  for base, _, names in os.walk(directory):
    for name in sorted(names):
      path = os.path.join(base, name)
      out[os.path.relpath(path, directory)] = digest.file_sha256(path)
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
    args = ocp.args.Composite(
      state=ocp.args.StandardSave(state), stats=ocp.args.StandardSave(dict(stats)), meta=ocp.args.JsonSave(dict(meta))
    )
    failure = None
    with _HoldOrbaxErrors() as held:
      try:
        with _stderr_held(keep=lambda e: _os_reason(e) is None):
          manager.save(step, args=args, force=True)
          manager.wait_until_finished()
        if _is_lead():
          self._write_manifest(kind, step)
      except Exception as e:  # pylint: disable=broad-except
        failure = e
    if failure is None:
      return
    reason = _os_reason(failure)
    if reason is None:  # a bug, not the disk: everything Orbax said, then the traceback
      held.release()
      raise failure
    self._discard_unfinished(kind, step)
    _drop_unretrieved_save_tasks()
    # Where a rerun continues: Orbax may have committed this very step before the checksums failed to write.
    resume_step = self.latest_step("latest")
    raise CheckpointSaveError(
      f"cannot write the '{kind}' checkpoint at step {step} in {self.root}: {reason}; free some space (or fix "
      f"the permissions) and rerun the same command: it continues from {_resume_point(resume_step)}"
    ) from failure

  def ensure_space(self, nbytes: int, what: str) -> None:
    """Refuses, before anything is written, a save of `nbytes` that the disk cannot hold (a full disk found in
    the middle of a save leaves TensorStore's writers failing one by one). Only where the answer is the same on
    every process: on several, a process that refused alone would leave the others waiting in the save."""

    if jax.process_count() > 1:
      return
    try:
      free = shutil.disk_usage(self.root).free
    except OSError:  # not a local file system: its writes report their own errors
      return
    need = nbytes + _SPACE_MARGIN
    if free < need:
      raise CheckpointSaveError(
        f"cannot write {what} in {self.root}: {free / 2**20:.1f} MiB free, it needs about {need / 2**20:.1f} MiB; "
        f"free some space (or use another --workdir) and rerun the same command: it continues from "
        f"{_resume_point(self.latest_step('latest'))}"
      )

  def delete(self, kind: str, step: int) -> None:
    """Removes checkpoint (`kind`, `step`) and its checksum record."""
    self._managers[kind].delete(step)
    if os.path.exists(self._manifest_path(kind)):
      os.remove(self._manifest_path(kind))

  def _discard_unfinished(self, kind: str, step: int) -> None:
    """Removes what a failed save left (Orbax's temporary directory, a half-written checksum record)."""
    for path in glob.glob(os.path.join(self.root, kind, f"{step}.orbax-checkpoint-tmp*")):
      shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(self._manifest_path(kind) + ".tmp"):
      os.remove(self._manifest_path(kind) + ".tmp")

  def replaced_since(self, kind: str, step: int) -> bool:
    """Whether `step` of `kind` is no longer the newest on disk (a training run saved another since this manager
    listed the steps, and deleted this one or is about to)."""
    folder = os.path.join(self.root, kind)
    on_disk = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    return step not in on_disk or max(on_disk) != step

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
    for rel, want in sorted(record["files"].items()):
      path = os.path.join(directory, rel)
      if rel not in on_disk:
        raise CheckpointCorruptError(f"{path} is missing from the '{kind}' checkpoint; {self._advice(kind)}")
      if on_disk[rel] != want:
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


@contextlib.contextmanager
def _stderr_held(limit: int = 1 << 20, keep: Callable[[BaseException], bool] = lambda e: False):
  """Holds what is written to file descriptor 2 while the body runs, and writes it out afterwards unless the
  body raised an error that `keep` does not keep it for: a write failing inside an Orbax save makes each of
  TensorStore's pending writers print its own traceback from C++ (hundreds of lines, past any Python hook),
  which would bury the one line that says why; for any other error (a bug) every diagnostic is shown. Held in
  memory through a pipe (a full disk cannot hold it), at most `limit` bytes."""

  sys.stderr.flush()
  read_end, write_end = os.pipe()
  saved = os.dup(2)
  held = bytearray()

  def drain():
    while chunk := os.read(read_end, 1 << 16):
      if len(held) < limit:
        held.extend(chunk)

  reader = threading.Thread(target=drain, daemon=True)
  reader.start()
  os.dup2(write_end, 2)
  os.close(write_end)
  failed = True
  try:
    yield
    failed = False
  except Exception as e:
    time.sleep(0.5)  # the writers still pending fail in the next moments: hold their tracebacks too
    failed = not keep(e)  # `keep(e)`: an error worth every diagnostic (a bug): write what was held after all
    raise
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)  # closes the pipe's last write end: the reader ends
    os.close(saved)
    reader.join()
    os.close(read_end)
    if not failed and held:
      os.write(2, bytes(held))


def _unretrieved_save_task(record: logging.LogRecord) -> bool:
  message = record.getMessage()
  return not ("exception was never retrieved" in message and "orbax-checkpoint-tmp" in message)


def _drop_unretrieved_save_tasks() -> None:
  """After a failed save, Orbax's abandoned writer tasks are logged by asyncio one by one as they are collected
  ("Task exception was never retrieved", often at exit, after the error line): they say nothing new. Only
  records that name an Orbax temporary directory are dropped."""
  logger = logging.getLogger("asyncio")
  if _unretrieved_save_task not in logger.filters:
    logger.addFilter(_unretrieved_save_task)


_SPACE_MARGIN = 1 << 18  # the metadata files, beside the arrays' bytes (about 50 KB a checkpoint)


def _resume_point(step: int | None) -> str:
  return "the start (no checkpoint was complete)" if step is None else f"step {step}"


def local_nbytes(tree: Any) -> int:
  """The bytes this process writes to save `tree`: its own shards of each array (one replica of each)."""

  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shards = getattr(leaf, "addressable_shards", None)
    if shards is None:
      total += np.asarray(leaf).nbytes
    else:
      total += sum(shard.data.nbytes for shard in shards if shard.replica_id == 0)
  return total


def _is_lead() -> bool:
  return jax.process_index() == 0


class RunCheckpointer:
  """A training run's checkpoints: the `latest` state and the selection's `best` copy, saved together.

  Every save writes, when the selection holds a best copy, `best` at its step (an unchanged `best` is not
  rewritten), and then `latest` at the current step: in that order, `latest`'s record of the best step never
  points past the `best` on disk, whenever the process dies. Both carry the train-split statistics and the same
  metadata: the run's static description (config, family, dataset, seed, ...) plus the selection's bookkeeping.
  """

  def __init__(
    self, workdir: str, *, stats: Mapping[str, np.ndarray], run_meta: Mapping[str, Any], started: float | None = None
  ) -> None:
    self.checkpoints = Checkpoints(workdir)
    self._stats = dict(stats)
    self._run_meta = dict(run_meta)
    # The training seconds of the processes before this one (read back by `restore_latest`), and when this one
    # started: every save records their sum, so that results.json reports the run's whole training time.
    self.seconds_before, self._started = 0.0, time.time() if started is None else started

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
    self.seconds_before = float(meta.get("train_seconds", 0.0))
    return state, meta

  @property
  def workdir(self) -> str:
    return os.path.dirname(self.checkpoints.root)

  def save(self, step: int, state: Any, *, selection: Any, done: bool, extra: Mapping[str, Any] | None = None) -> None:
    """Saves the selection's best copy as `best`, then `latest`; `done`: early stopping fired; `extra`: more
    metadata (the logger's unfinished window)."""
    # `stopped_early` means early stopping fired; reaching max_steps does not stop a resumed, longer run.
    meta = {"selection": selection.to_json(), "stopped_early": done, **(extra or {}), **self._run_meta}
    meta["train_seconds"] = round(self.seconds_before + time.time() - self._started, 2)
    new_best = None
    if selection.best is not None and selection.best[0] != self.checkpoints.latest_step("best"):
      new_best = selection.best
    pending = [s for s in (new_best and new_best[1], state) if s is not None]
    if step == self.checkpoints.latest_step():
      pending = pending[:-1]
    if pending:
      nbytes = sum(local_nbytes(s) + local_nbytes(self._stats) for s in pending)
      self.checkpoints.ensure_space(nbytes, f"the checkpoints of step {step}")
    if selection.best is not None:
      best_step, best_state = selection.best
      self.checkpoints.save("best", best_step, state=best_state, stats=self._stats, meta=meta)
    try:
      self.checkpoints.save("latest", step, state=state, stats=self._stats, meta=meta)
    except CheckpointSaveError:
      if new_best is not None and self.checkpoints.latest_step() is None:
        # A best with no latest to resume from would make the rerun refuse the workdir: back to how it was.
        self.checkpoints.delete("best", new_best[0])
      raise

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
