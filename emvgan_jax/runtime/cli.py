"""Plumbing shared by the command-line tools (`evaluate`, `retrieve`, `sweep`, `tune`): flags, logging, errors.

Each tool keeps its flags in its own `flags.FlagValues`, not absl's global `FLAGS`: the tools are also libraries
(sweep imports evaluate, tests import all three), and absl refuses a second `--workdir` in the global set.
A tool's `main(argv)` parses its flags with `parse_flags`, runs, and turns the errors a user can fix into a
single `error: ...` line on stderr and a non-zero exit (`run_tool`), instead of a traceback: status 2 for a
usage error (a flag or config field that cannot be used), 1 for a failure (data, checkpoints, the workdir, the
disk). `EMVGAN_VERBOSE=1` keeps the traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import flags

from emvgan_jax.runtime import checkpoint as ckpt_lib


class ToolError(Exception):
  """An error the user can fix; its message says what to do and is printed as one line (exit status 1)."""


class UsageError(ToolError):
  """A flag the tool cannot use (exit status 2)."""


USAGE_STATUS, FAILURE_STATUS = 2, 1


class Exit(SystemExit):
  """Exit with `status` after printing `message`; `message` stays readable for callers (tests) that catch it."""

  def __init__(self, message: str, status: int):
    super().__init__(status)
    self.message = message


def fail(message: str, status: int = FAILURE_STATUS) -> None:
  """Prints `message` (one line) to stderr and exits with `status`."""
  print(message, file=sys.stderr, flush=True)
  raise Exit(message, status)


def status_of(e: BaseException) -> int:
  """2 for a usage error (a bad flag or config field), 1 for any other failure."""
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top

  return USAGE_STATUS if isinstance(e, (UsageError, config_lib.ConfigError)) else FAILURE_STATUS


def one_line(message: object, max_chars: int = 1000) -> str:
  """`message` on one line (newlines become '; '), shortened to `max_chars` characters."""
  text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
  return text if len(text) <= max_chars else text[: max_chars - 3] + "..."


def new_flag_values() -> flags.FlagValues:
  """A private flag set (`parse_flags` handles `--help`, which absl's `app.run` would add to the global set)."""
  return flags.FlagValues()


def short_help(doc: str) -> str:
  """What `--help` shows of a tool's docstring: its first paragraph and its usage (the paragraph starting
  'Usage' or 'Run'); the rest (design notes) stays in the module's docstring and docs/."""
  paragraphs = [p.strip("\n") for p in doc.strip().split("\n\n")]
  keep = [paragraphs[0]] + [p for p in paragraphs[1:] if p.lstrip().startswith(("Usage", "Run"))]
  return "\n\n".join(keep)


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str], help_text: str) -> list[str]:
  """Parses `argv` (program name first) into `flag_values`; prints `help_text` and the flags on `--help`.

  Raises:
    SystemExit: with an `error: ...` line on unknown flags, bad values or missing required flags.
  """
  flag_values.unparse_flags()  # a tool called twice in one process (tests) parses afresh
  argv = take_verbose(argv)
  if any(arg in HELP_ARGS for arg in argv[1:]):
    # Before parsing: help must not fail on a missing required flag.
    print(short_help(help_text) + "\n")
    print(flag_values.get_help(include_special_flags=False))
    print(VERBOSE_HELP)
    sys.exit(0)
  try:
    rest = flag_values(list(argv))
  except flags.Error as e:
    fail(f"error: {one_line(e)} (see --help)", USAGE_STATUS)
  if len(rest) > 1:
    fail(f"error: unexpected arguments {rest[1:]} (flags are written --name=value; see --help)", USAGE_STATUS)
  return rest


def parse_ints(values: Sequence[str], flag: str) -> list[int]:
  """The integers of a list flag (`--seeds=0,1,2`); anything else is a UsageError naming the flag."""
  try:
    return [int(v) for v in values]
  except ValueError:
    raise UsageError(f"--{flag} must be comma-separated integers, got {','.join(values)}") from None


class QuietLibraries(logging.Filter):
  """Drops INFO chatter of Orbax, TFDS and JAX (a dozen lines per restore or build); warnings still pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    noisy = any(part in record.pathname for part in ("/orbax/", "/tensorflow_datasets/", "/absl/", "/jax/_src/"))
    # Orbax warns once per manager that a read-only directory is read only: that is why it was opened so. TFDS
    # warns that a dataset folder about to be built has no dataset_info.json yet: it is being built.
    message = record.getMessage()
    if "is read only" in message or "has no dataset_info.json" in message:
      return False
    return record.levelno >= logging.WARNING or not noisy


def setup_logging(level: int = logging.INFO) -> None:
  """INFO messages of this project to stderr (what absl's `app.run` would have set up); the libraries' INFO
  chatter only with --verbose."""
  root = logging.getLogger()
  if not root.handlers:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(asctime)s %(filename)s:%(lineno)d] %(message)s"))
    root.addHandler(handler)
  for handler in root.handlers:  # also a handler that an imported library installed first
    if not verbose() and not any(isinstance(f, QuietLibraries) for f in handler.filters):
      handler.addFilter(QuietLibraries())
  root.setLevel(level)


DEFAULT_COMPILATION_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "emvgan_jax", "xla")


def enable_compilation_cache(path: str | None) -> None:
  """JAX's persistent compilation cache in `path` (as `emvgan_jax.main` does); None or '' leaves it off.

  An environment setting (JAX_COMPILATION_CACHE_DIR, as the tests set) wins.
  """
  if path and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import jax  # pylint: disable=g-import-not-at-top

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def known_errors() -> tuple[type[BaseException], ...]:
  """The exceptions whose message is itself the advice: shown as one line, without a traceback."""
  from emvgan_jax import config_lib  # pylint: disable=g-import-not-at-top
  from emvgan_jax.data import emomv  # pylint: disable=g-import-not-at-top
  from emvgan_jax.runtime import workdir  # pylint: disable=g-import-not-at-top
  from tfds_emomv.emomv import files  # pylint: disable=g-import-not-at-top  (imports TFDS: only when needed)

  return (
    ToolError,
    ckpt_lib.CheckpointError,
    files.EmoMVFormatError,
    config_lib.ConfigError,
    emomv.DataError,
    workdir.WorkdirError,
  )


def load_run(workdir: str, checkpoint: str) -> Any:
  """`restore.load_run`, with its errors turned into advice (`ToolError`)."""
  from emvgan_jax.runtime import restore  # pylint: disable=g-import-not-at-top

  try:
    restore.parse_checkpoint(checkpoint)
  except ValueError as e:
    raise ToolError(str(e)) from None
  try:
    return restore.load_run(workdir, checkpoint)
  except ckpt_lib.CheckpointError:
    raise
  except ValueError as e:
    # Orbax's own advice (turn on truncation/padding) would silently load a different model: drop it.
    message = re.sub(r"\s*Truncating/padding is disabled.*", "", one_line(e, 600)).rstrip(". ")
    raise ToolError(
      f"{message}; evaluate it with the code version that trained it, or retrain into a new workdir"
    ) from e


def start_tool(
  flag_values: flags.FlagValues,
  argv: Sequence[str] | None,
  help_text: str,
  *,
  compilation_cache: flags.FlagHolder | None = None,
) -> None:
  """What every tool's `main` does first: parse its flags (`argv` None: `sys.argv`), set up logging and, for the
  tools that train, the compilation cache (the holder of their `--compilation_cache_dir`, read once parsed)."""
  parse_flags(flag_values, sys.argv if argv is None else argv, help_text)
  setup_logging()
  if compilation_cache is not None:
    enable_compilation_cache(compilation_cache.value)


VERBOSE_ENV = "EMVGAN_VERBOSE"  # set (to anything but 0) to see the traceback behind a one-line error
HELP_ARGS = ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull")
_VERBOSE_ON = {"--verbose", "--verbose=true", "--verbose=1", "--verbose=yes"}
_VERBOSE_OFF = {"--noverbose", "--verbose=false", "--verbose=0", "--verbose=no"}


def verbose() -> bool:
  """Whether the user asked for more (`--verbose`, or $EMVGAN_VERBOSE): library INFO logs, tracebacks."""
  return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def take_verbose(argv: Sequence[str]) -> list[str]:
  """`argv` without `--verbose`, which every tool takes: it sets $EMVGAN_VERBOSE for the rest of the process."""
  rest = []
  for arg in argv:
    if arg.lower() in _VERBOSE_ON:
      os.environ[VERBOSE_ENV] = "1"
    elif arg.lower() in _VERBOSE_OFF:
      os.environ[VERBOSE_ENV] = "0"
    else:
      rest.append(arg)
  return rest


VERBOSE_HELP = "  --verbose: library INFO logs and the traceback behind an error (also EMVGAN_VERBOSE=1)."


def run_app(main: Callable[[list[str]], None], help_text: str) -> None:
  """absl's `app.run` for the tools whose flags are absl's global ones (`main`, `benchmark`): `--help` in any
  spelling prints the tool's description and its own flags and exits 0 (absl's exits 1, and its --helpfull
  lists every library's flags), and `--verbose` is taken as everywhere else."""
  from absl import app  # pylint: disable=g-import-not-at-top

  sys.argv = take_verbose(sys.argv)
  if any(arg in HELP_ARGS for arg in sys.argv[1:]):
    print(short_help(help_text) + "\n")
    print(flags.FLAGS.module_help("__main__"))
    print(VERBOSE_HELP)
    sys.exit(0)
  app.run(main, flags_parser=_parse_global_flags)


def _parse_global_flags(argv: list[str]) -> list[str]:
  """absl's parse of the global flags, with its errors and ml_collections' (a config file that cannot be loaded,
  an override naming no field) as one `error: ...` line and exit status 2 instead of a traceback."""
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top  (the module)

  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    text = str(e)
    if "Traceback (most recent call last)" in text:  # a config file whose get_config() raised: its last line
      fail(f"error: the config file does not load: {text.strip().splitlines()[-1].strip()}", USAGE_STATUS)
    fail(f"error: {one_line(text)} (see --help)", USAGE_STATUS)
  except (AttributeError, KeyError) as e:  # --config.x.y=... for a field the config does not have
    text = str(e).replace("\\'", "'").replace("\\n", " ")
    overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--") and "." in a.split("=")[0]]
    quoted = re.findall(r"'(\w+)'", text)
    named = [(q, a) for q in quoted for a in overrides if f".{q}." in a + "."]
    hint = re.search(r'Did you mean "(\w+)"', text)
    suggestion = f"; did you mean {hint.group(1)!r}?" if hint else ""
    if named:
      key, flag = named[0]
      fail(f"error: {flag}: the config has no field {key!r}{suggestion}", USAGE_STATUS)
    listed = ", ".join(overrides) or "a --config override"
    fail(f"error: {listed}: no such config field ({one_line(text, 200)})", USAGE_STATUS)
  except (SyntaxError, ImportError) as e:  # the config file itself does not load
    where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
    fail(
      f"error: the config file does not load: {type(e).__name__}: {e.msg if isinstance(e, SyntaxError) else e}{where}",
      USAGE_STATUS,
    )
  except (TypeError, ValueError) as e:  # an override of the wrong type, a config file that raises
    fail(f"error: {one_line(e, 400)}", USAGE_STATUS)
  error_config = getattr(config_flags, "_ErrorConfig", None)  # a config file that failed to load, kept lazy
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    if error_config and isinstance(value, error_config):
      try:
        value.keys()
      except OSError as e:
        reason = one_line(e).split(";")[-1].strip()
        given = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{name}=")), "?")
        fail(f"error: --{name}={given}: {reason} (a config file such as configs/emomv_c.py)", USAGE_STATUS)
  return rest


def os_error_line(e: OSError) -> str:
  """A full disk, a permission or a missing path, in one line that names the path."""
  import errno  # pylint: disable=g-import-not-at-top

  path = e.filename or "?"
  advice = {
    errno.ENOSPC: "free some space or use another --workdir",
    errno.EDQUOT: "free some space or use another --workdir",
    errno.EACCES: "check the permissions, or use another path",
    errno.EROFS: "the file system is read-only: use another path",
  }.get(e.errno, "check the path")
  return f"{e.strerror or e} ({path}): {advice}"


def run_tool(body: Callable[[], object]) -> object:
  """Runs `body()`; a known error becomes one `error: ...` line and exit status 2 (a usage error) or 1 (a failure),
  and so does an OSError about a path (a full disk, a permission). With $EMVGAN_VERBOSE set, errors keep their
  traceback."""
  if verbose():
    return body()
  try:
    return body()
  except known_errors() as e:
    # A failed Orbax restore leaves TensorStore read coroutines behind, which Python reports ("Event loop is
    # closed", a traceback) as it collects them at exit: after the one-line error, that is only noise.
    sys.unraisablehook = lambda unraisable: None
    fail(f"error: {one_line(e)}", status_of(e))
  except OSError as e:
    if e.filename is None:
      raise
    sys.unraisablehook = lambda unraisable: None
    fail(f"error: {os_error_line(e)}")
