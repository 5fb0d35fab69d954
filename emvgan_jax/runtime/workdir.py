"""One writer per workdir, and a workdir that remembers the run it holds.

`claim(config, workdir)` is the first thing training does:
  1. it takes the workdir's lock, `W/.lock`, an exclusive `flock` held by the process until it exits (the
     kernel drops it when a process dies, so a stale lock never blocks; its file names the last holder, which
     is logged when taken over). A second run on the same workdir is refused with the holder's pid and host;
  2. if the workdir already holds a run (`config.json` beside checkpoints or results), the new config must be
     the same run: a field that changes what the run is (seed, model, data, shapes, losses, optimiser; the
     `run_signature`, less the length of training) is refused with the differing fields named;
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
from collections.abc import Mapping
from typing import Any

import ml_collections

from emvgan_jax import config_lib, errors, families

# Fields that may differ on resume: they say how long to train, not what is trained.
RESUMABLE_KEYS = ("train.num_epochs", "train.max_steps")
# What a run writes into its workdir (removed by `restart`).
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "tensorboard", "results.json", "plots", "eval", "config.json")


# Fields (dotted prefixes) that define every run, whatever its model; the model adds its own `config_keys`
# (`families.MODELS`). A peer has no training loop: the `train.` and `sharding` fields do not make it.
_RUN_KEYS = (
  "model",
  "seed",
  "data.dataset",
  "data.holdout_fraction",
  "data.holdout_seed",
  "data.selection_fraction",
  "data.selection_seed",
  "data.cv_folds",
  "data.cv_fold",
  "data.cv_repeat",
  "sharding",
  "train.batch_size",
  "train.drop_remainder",
  "train.num_epochs",
  "train.max_steps",
  "train.eval_every_steps",
  "train.patience",
  "train.selection_metric",
  "train.selection_mode",
)
_LOOP_KEYS = ("train.", "sharding")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  """A nested dict as {'a.b.c': value}."""
  if not isinstance(d, dict):
    return {prefix: d}
  out = {}
  for k, v in d.items():
    out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
  return out


def run_signature(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The flattened fields of `config` that make a run what it is.

  Raises:
    config_lib.ConfigError: `config.model` names no model.
  """
  model = families.model(config)
  common = _RUN_KEYS if model.trained else tuple(k for k in _RUN_KEYS if not k.startswith(_LOOP_KEYS))
  prefixes = common + model.config_keys
  flat = flatten(json.loads(config.to_json_best_effort()))
  return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def differences(stored: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
  """Fields where a saved config (JSON) differs from `config` as a run: 'key: saved -> wanted'."""
  wanted = run_signature(config)
  # A field the saved config lacks did not exist when it was written: it ran with that field's legacy value
  # (or, where the default kept the old behaviour, today's default), which `merge_onto_defaults` fills in.
  saved = run_signature(config_lib.merge_onto_defaults(dict(stored)))
  return [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in sorted(wanted.items()) if saved.get(k) != v]


class WorkdirError(errors.Error):
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


def start_over(workdir: str) -> list[str]:
  """Deletes what a run wrote into `workdir` (the lock file stays), saying first what it deletes (evaluations and
  exported embeddings under `eval/` included); returns those paths."""
  present = [os.path.join(workdir, name) for name in RUN_OUTPUTS if os.path.lexists(os.path.join(workdir, name))]
  if present:
    listed = ", ".join(os.path.basename(p) + ("/" if os.path.isdir(p) else "") for p in present)
    extra = ""
    if os.path.isdir(os.path.join(workdir, "eval")):
      extra = f" (eval/ holds {', '.join(sorted(os.listdir(os.path.join(workdir, 'eval'))))})"
    logging.warning("--restart deletes from %s: %s%s", os.path.abspath(workdir), listed, extra)
  for path in present:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  return present


def check_same_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a config that is not the run `workdir` holds.

  Raises:
    WorkdirError: the fields that differ, or results without a checkpoint to resume from.
  """
  if not _holds_a_run(workdir):
    return
  config_path = os.path.join(workdir, "config.json")
  if os.path.isfile(config_path):
    try:
      with open(config_path, encoding="utf-8") as f:
        stored: dict[str, Any] = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # truncated or overwritten by something else
      raise WorkdirError(
        f"{config_path} is damaged ({type(e).__name__}: {e}); it records the config of the run in {workdir}: "
        "put back a good copy to resume, pass --restart to start over, or use another --workdir"
      ) from None
    diff = [d for d in differences(stored, config) if d.split(":")[0] not in RESUMABLE_KEYS]
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
      start_over(workdir)
    check_same_run(config, workdir)
  except BaseException:
    lock.release()
    raise
  return lock
