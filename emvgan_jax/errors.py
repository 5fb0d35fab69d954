"""The errors a user can act on, and `guard`, the one boundary every command of both packages runs in.

A message says what went wrong, naming the file, flag or field, and what to do about it. Every command
(`emvgan_jax/tools/*`, `emvgan_jax.main`, `tfds_emomv`'s `build`, `features` and `synthetic`, `benchmarks/*`) runs
inside `guard`, which prints it as `error: <message>` without a traceback: exit status 2 for a `UsageError` (a
flag, argument or config field that cannot be used), 1 for any other `Error` (data, checkpoints, a workdir, the
disk). The library's own error types derive from these (`config_lib.ConfigError`, `data.splits.DataError`,
`runtime.checkpoint.CheckpointError`, `runtime.workdir.WorkdirError`), so a command needs to know only these two.

This module imports the standard library only: the commands load it before they parse their flags, and
`tfds_emomv` (below `emvgan_jax` otherwise) uses it too.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
USAGE_STATUS, FAILURE_STATUS = 2, 1


class Error(Exception):
  """An error the user can fix; its message says what to do."""


class UsageError(Error):
  """An argument, flag or config field that cannot be used."""


class Exit(SystemExit):
  """Exit with `status` after printing `message`; `message` stays readable for callers (tests) that catch it."""

  def __init__(self, message: str, status: int):
    super().__init__(status)
    self.message = message


class Terminated(KeyboardInterrupt):
  """SIGTERM, raised where the command is (as Ctrl-C raises KeyboardInterrupt), so that it ends the same way."""


VERBOSE_ENV = "EMVGAN_VERBOSE"  # set (to anything but 0) to see the traceback behind a one-line error
# Set (to anything but 0) to read feature files that `emvgan-extract --weights=random` made (tfds_emomv's reader
# refuses them otherwise: they look like real features and mean nothing).
RANDOM_FEATURES_ENV = "EMVGAN_ALLOW_RANDOM_FEATURES"
# The flags every command takes, each setting its environment variable for the rest of the process (and for the
# processes it starts), in absl's spellings.
PROCESS_FLAGS = {"verbose": VERBOSE_ENV, "allow_random_features": RANDOM_FEATURES_ENV}
RANDOM_FEATURES_HELP = (
  "  --allow_random_features: read feature files made with random weights (emvgan-extract --weights=random),\n"
  "    which are refused otherwise (also EMVGAN_ALLOW_RANDOM_FEATURES=1)."
)
PROCESS_FLAGS_HELP = (
  "  --verbose: library INFO logs and the traceback behind an error (also EMVGAN_VERBOSE=1).\n" + RANDOM_FEATURES_HELP
)


def verbose() -> bool:
  """Whether the user asked for more (`--verbose`, or $EMVGAN_VERBOSE): library INFO logs, tracebacks."""
  return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def take_process_flags(argv: Sequence[str]) -> list[str]:
  """`argv` without the flags every command takes (`PROCESS_FLAGS`: `--verbose`, `--allow_random_features`, in
  absl's spellings), each of which sets its environment variable for the rest of the process."""
  spellings = {}
  for name, env in PROCESS_FLAGS.items():
    spellings.update({f"--{name}{v}": (env, "1") for v in ("", "=true", "=1", "=yes")})
    spellings.update({s: (env, "0") for s in (f"--no{name}", *(f"--{name}={v}" for v in ("false", "0", "no")))})
  rest = []
  for arg in argv:
    if arg.lower() in spellings:
      env, value = spellings[arg.lower()]
      os.environ[env] = value
    else:
      rest.append(arg)
  return rest


def fail(message: str, status: int = FAILURE_STATUS) -> None:
  """Prints `message` (one line) to stderr and exits with `status`."""
  print(message, file=sys.stderr, flush=True)
  raise Exit(message, status)


def one_line(message: object, max_chars: int = 1000) -> str:
  """`message` on one line (newlines become '; '), shortened to `max_chars` characters."""
  text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
  return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error_line(e: OSError) -> str:
  """A full disk, a permission or a missing path, in one line that names the path (when the error has one)."""
  where = f" ({e.filename})" if e.filename else ""
  full = "free some space (nothing half-written was kept) or write elsewhere"
  advice = {
    errno.ENOSPC: full,
    errno.EDQUOT: full,
    errno.EFBIG: "a file would exceed the size this process may write (nothing half-written was kept)",
    errno.EACCES: "check the permissions, or use another path",
    errno.EPERM: "check the permissions, or use another path",
    errno.EROFS: "the file system is read-only: use another path",
  }.get(e.errno, "check the path")
  return f"{e.strerror or e}{where}: {advice}"


def silence_leftovers() -> None:
  """After a one-line error, what a failed Orbax save or restore leaves behind stays quiet: its TensorStore
  coroutines, which Python reports as it collects them at exit ("Event loop is closed" with a traceback, or a
  "coroutine ... was never awaited" warning, in one run out of a few), would only bury the line that says what
  went wrong."""
  sys.unraisablehook = lambda unraisable: None
  warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)


def _terminate(signum: int, frame: object) -> None:
  del signum, frame
  raise Terminated


def guard(body: Callable[[], T], known: Callable[[], tuple[type[BaseException], ...]] = tuple) -> T:
  """Runs `body()` (a whole command, flag parsing included) inside the one error boundary.

  Ends in one line on stderr, never a traceback (unless --verbose / $EMVGAN_VERBOSE):
  - an `Error`, or an error of `known()` (other errors whose message is itself the advice, such as the EmoMV
    reader's): `error: <message>`, status 2 for a `UsageError`, else 1;
  - an OSError naming a path, or a full disk: what failed, the path, what to do; status 1;
  - Ctrl-C or SIGTERM at any moment: `interrupted (...)`, status 130 or 143. Every file the commands write
    appears whole or not at all, so the same command can simply be run again;
  - an exception carrying its own `exit_code` (a training run stopped by a signal after saving): its message,
    with that status.
  Anything else is a bug, and keeps its traceback.
  """
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, _terminate)
  try:
    return body()
  except KeyboardInterrupt as e:
    if verbose():
      raise
    silence_leftovers()
    name, status = ("SIGTERM", 128 + signal.SIGTERM) if isinstance(e, Terminated) else ("Ctrl-C", 130)
    fail(f"interrupted ({name}) before the command finished: nothing half-written was kept; run it again", status)
  except Exception as e:
    if verbose():
      raise
    code = getattr(e, "exit_code", None)
    if isinstance(code, int):
      silence_leftovers()
      fail(f"interrupted: {one_line(e)}", code)
    if isinstance(e, (Error, *known())):
      silence_leftovers()
      fail(f"error: {one_line(e)}", USAGE_STATUS if isinstance(e, UsageError) else FAILURE_STATUS)
    if isinstance(e, OSError) and (e.filename or e.errno in DISK_FULL):
      silence_leftovers()
      fail(f"error: {os_error_line(e)}")
    raise
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
