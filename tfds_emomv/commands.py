"""What the commands of this package (`build`, `synthetic`, `emomv.make_dummy_data`) share: `--help` in any
spelling prints the command's description and its own flags and exits 0 (absl's own exits 1 and lists every
library's flags); `--verbose` sets $EMVGAN_VERBOSE; and the command runs inside `emvgan_jax.errors.guard`, the one
error boundary of every command of both packages (one line for a user's mistake, a full disk, Ctrl-C or SIGTERM).
This package imports that one standard-library module of `emvgan_jax` and nothing else of it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app, flags

from emvgan_jax import errors
from tfds_emomv.emomv import files

HELP_ARGS = ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull")
verbose, take_process_flags, fail = errors.verbose, errors.take_process_flags, errors.fail


def help_asked(argv: Sequence[str]) -> bool:
  return any(arg in HELP_ARGS for arg in argv[1:])


def known_errors() -> tuple[type[BaseException], ...]:
  """The EmoMV reader's errors, shown as one line: their messages name the file and what is wrong."""
  return (files.EmoMVFormatError,)


def run(main: Callable[[list[str]], None], doc: str, verbose_help: str | None = None) -> None:
  """absl's `app.run(main)` for a command of absl's global flags, with the help and `--verbose` above, inside the
  one error boundary."""

  sys.argv = take_process_flags(sys.argv)
  if help_asked(sys.argv):
    print(doc.strip() + "\n")
    print(flags.FLAGS.module_help(main.__module__))  # `__main__`, or the module of a console script
    if verbose_help:
      print(f"  --verbose: {verbose_help}")
    print(errors.RANDOM_FEATURES_HELP)
    sys.exit(0)
  errors.guard(lambda: app.run(main, flags_parser=_parse_flags), known_errors)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parse, with a bad flag as one `error: ...` line and exit status 2 (absl's own prints two lines and
  exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"error: {errors.one_line(e)} (see --help)", errors.USAGE_STATUS)
