"""One writer per workdir, and a workdir that remembers the run it holds.

`claim(config, workdir)` is the first thing training does:
  1. it takes the workdir's lock, `W/.lock`, an exclusive `flock` held by the process until it exits (the
     kernel drops it when a process dies, so a stale lock never blocks; its file names the last holder, which
     is logged when taken over). A second run on the same workdir is refused with the holder's pid and host;
  2. if the workdir already holds a run (`config.json` beside checkpoints or results), the new config must be
     the same run: a field that changes what the run is (seed, model, data, shapes, losses, optimiser; the
     `runtime.experiments` signature, less the length of training) is refused with the differing fields named;
  3. results without a checkpoint to resume from are refused too, rather than silently trained over.
`restart=True` (`main --restart`) deletes what the workdir held (checkpoints, logs, results, plots,
evaluations) and starts over.

`flock` is advisory and local: two hosts on a network file system without lock support are not kept apart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import time
from typing import Any

import ml_collections

# Fields that may differ on resume: they say how long to train, not what is trained.
RESUMABLE_KEYS = ("train.num_epochs", "train.max_steps")
# What a run writes into its workdir (removed by `restart`).
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "tensorboard", "results.json", "plots", "eval", "config.json")


class WorkdirError(Exception):
  """The workdir cannot take this run; the message says why and what to do."""


class WorkdirLock:
  """An exclusive lock on a workdir, held until `release` or the end of the process."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._fd: int | None = None

  def acquire(self) -> None:
    """Takes the lock.

    Raises:
      WorkdirError: another live process holds it (named).
    """
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
      os.close(fd)
      raise WorkdirError(
        f"{os.path.dirname(self.path)} is in use by another run ({holder}); wait for it to finish, stop it, or "
        "use another --workdir"
      ) from None
    previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if previous:
      logging.info("Taking over the lock of %s, which is no longer running", previous)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}, since {started}".encode())
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None


def _holds_a_run(workdir: str) -> bool:
  return any(os.path.exists(os.path.join(workdir, p)) for p in ("checkpoints", "results.json", "metrics.jsonl"))


def start_over(workdir: str) -> None:
  """Deletes what a run wrote into `workdir` (the lock file stays)."""
  for name in RUN_OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config that is not the run `workdir` holds.

  Raises:
    WorkdirError: the fields that differ, or results without a checkpoint to resume from.
  """
  from emvgan_jax.runtime import experiments  # pylint: disable=g-import-not-at-top

  if not _holds_a_run(workdir):
    return
  config_path = os.path.join(workdir, "config.json")
  if os.path.isfile(config_path):
    with open(config_path, encoding="utf-8") as f:
      stored: dict[str, Any] = json.load(f)
    diff = [d for d in experiments.differences(stored, config) if d.split(":")[0] not in RESUMABLE_KEYS]
    if diff:
      raise WorkdirError(
        f"{workdir} holds a run of another config ({'; '.join(diff[:6])}); resume it with the config that made "
        "it, pass --restart to start over, or use another --workdir"
      )

  def has_steps(kind: str) -> bool:  # a saved step is a directory named by its number
    folder = os.path.join(workdir, "checkpoints", kind)
    return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))

  if os.path.isfile(os.path.join(workdir, "results.json")) and not (has_steps("latest") or has_steps("best")):
    raise WorkdirError(
      f"{workdir} has results.json but none of the checkpoints it came from: pass --restart to train again (it "
      "deletes those results), or use another --workdir"
    )


def claim(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False) -> WorkdirLock:
  """Locks `workdir` for this process and checks (or, with `restart`, clears) what it holds.

  Raises:
    WorkdirError: see `WorkdirLock.acquire` and `check_same_run`.
  """
  os.makedirs(workdir, exist_ok=True)
  lock = WorkdirLock(workdir)
  lock.acquire()
  try:
    if restart:
      logging.info("--restart: deleting the run in %s and starting over", workdir)
      start_over(workdir)
    check_same_run(config, workdir)
  except BaseException:
    lock.release()
    raise
  return lock
