"""Files that appear whole or not at all: every file a command writes goes through `replacing` (or its shortcuts).

A file is written beside its target under a hidden partial name (`.results.json.partial-<pid>.json`, the target's
extension kept so that numpy, matplotlib and h5py write the same bytes they would to the target) and renamed over
the target only once it is complete; `os.replace` within one folder is atomic on POSIX file systems. A failure, a
full disk, Ctrl-C or SIGTERM leaves the target as it was (absent, or the previous whole version) and deletes the
partial file; a SIGKILL leaves the partial file, which the next write of the same target deletes once its process
is gone. A folder works the same way: build it under the partial name, and it is renamed into place whole.

This module imports the standard library and `errors` only (both packages use it, `tfds_emomv` included).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

from emvgan_jax import errors

_MARK = ".partial-"


def partial_path(path: str | os.PathLike[str], pid: int | None = None) -> str:
  """Where `path` is written before it is complete: hidden, beside it, with its extension."""
  path = os.fspath(path)
  folder, name = os.path.split(path)
  _, ext = os.path.splitext(name)
  return os.path.join(folder, f".{name}{_MARK}{os.getpid() if pid is None else pid}{ext}")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's process
    return True
  return True


def _remove(path: str) -> None:
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


def remove_stale_partials(path: str | os.PathLike[str]) -> list[str]:
  """Deletes what killed writers of `path` left (partial files of processes no longer running); returns them."""
  path = os.fspath(path)
  folder, name = os.path.split(path)
  stale = []
  for leftover in glob.glob(os.path.join(glob.escape(folder or "."), f".{glob.escape(name)}{_MARK}*")):
    pid = os.path.basename(leftover)[len(name) + 1 + len(_MARK) :].split(".")[0]
    if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
      _remove(leftover)
      stale.append(leftover)
  return stale


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
  """Yields the partial path to write `path`'s new content to (a file, or a folder to create); on a normal exit
  renames it over `path` (an existing folder at `path` is replaced), on any exception deletes it and re-raises."""
  path = os.fspath(path)
  remove_stale_partials(path)
  tmp = partial_path(path)
  _remove(tmp)
  try:
    yield tmp
    if os.path.isdir(tmp) and os.path.isdir(path):
      old = partial_path(path) + ".old"
      os.replace(path, old)
      os.replace(tmp, path)
      _remove(old)
    else:
      os.replace(tmp, path)
  except BaseException:
    _remove(tmp)
    raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
  """`path` holds `text` (UTF-8), whole or not at all."""
  with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.write(text)


def write_json(path: str | os.PathLike[str], value: Any, indent: int = 2) -> None:
  """`path` holds `value` as JSON, whole or not at all."""
  write_text(path, json.dumps(value, indent=indent))


# What an HDF5 file holds beyond its arrays (superblock, object headers, chunk index): a bound, for `reserve`.
HDF5_OVERHEAD = 1 << 16


def reserve(folder: str | os.PathLike[str], nbytes: int) -> None:
  """Fails now, with the OSError a write would meet (no space, or a file-size limit), unless `folder`'s disk can
  take `nbytes` more: for writers that cannot fail cleanly halfway (HDF5 crashes the process when a write
  fails). The space is allocated for a moment and released, not kept.

  Raises:
    OSError: naming `folder`, with errno ENOSPC, EDQUOT or EFBIG.
  """
  folder = os.fspath(folder)
  remove_stale_partials(os.path.join(folder, "space"))  # the probes of writers killed while they checked
  probe = partial_path(os.path.join(folder, "space"))
  try:
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
  except OSError as e:
    raise OSError(e.errno, e.strerror, folder) from None
  try:
    os.posix_fallocate(fd, 0, max(int(nbytes), 1))
  except OSError as e:
    if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without allocation: its writes will tell
      return
    raise OSError(e.errno, e.strerror, folder) from None
  finally:
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
      os.remove(probe)


def as_disk_error(e: BaseException, path: str | os.PathLike[str]) -> OSError | None:
  """The OSError (naming `path`) behind a library's report of a failed write, such as array_record's
  `RuntimeError('write() failed: No space left on device; ...')`; None when `e` is not about a full disk."""
  for code in errors.DISK_FULL:
    if os.strerror(code) in str(e):
      return OSError(code, os.strerror(code), os.fspath(path))
  return None
