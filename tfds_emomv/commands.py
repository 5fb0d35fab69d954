"""What the commands of this package (`build`, `synthetic`, `emomv.make_dummy_data`) share: `--help` in any
spelling prints the command's description and its own flags and exits 0 (absl's own exits 1 and lists every
library's flags), and `--verbose` sets $EMVGAN_VERBOSE as `emvgan_jax`'s tools take it (this package does not
import `emvgan_jax`; `emvgan_jax/tools/cli.py` holds the same spellings for its tools).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags

HELP_ARGS = ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull")
VERBOSE_ENV = "EMVGAN_VERBOSE"
_VERBOSE_ON = {"--verbose", "--verbose=true", "--verbose=1", "--verbose=yes"}
_VERBOSE_OFF = {"--noverbose", "--verbose=false", "--verbose=0", "--verbose=no"}


def help_asked(argv: Sequence[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


def verbose() -> bool:
  return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def take_verbose(argv: Sequence[str]) -> list[str]:
  """`argv` without `--verbose` (in absl's spellings), which sets $EMVGAN_VERBOSE."""
  rest = []
  for arg in argv:
    if arg.lower() in _VERBOSE_ON:
      os.environ[VERBOSE_ENV] = "1"
    elif arg.lower() in _VERBOSE_OFF:
      os.environ[VERBOSE_ENV] = "0"
    else:
      rest.append(arg)
  return rest


def run(main: Callable[[list[str]], None], doc: str, verbose_help: str | None = None) -> None:
  """absl's `app.run(main)` for a command of absl's global flags, with the help and `--verbose` above."""

  sys.argv = take_verbose(sys.argv)
  if help_asked(sys.argv):
    print(doc.strip() + "\n")
    print(flags.FLAGS.module_help(main.__module__))  # `__main__`, or the module of a console script
    if verbose_help:
      print(f"  --verbose: {verbose_help}")
    sys.exit(0)
  app.run(main)
