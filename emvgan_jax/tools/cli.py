"""Plumbing shared by the commands (`emvgan_jax/tools/*.py`, `emvgan_jax.main`, `benchmarks/`): flags, logging,
errors.

Each tool keeps its flags in its own `flags.FlagValues`, not absl's global `FLAGS`: tests import several tools
into one process, and absl refuses a second `--workdir` in the global set. A tool's `main(argv)` parses its
flags with `parse_flags` before it imports JAX (so `--help` and a usage error answer at once), runs, and turns
the errors a user can fix (`emvgan_jax.errors`) into a single `error: ...` line on stderr and a non-zero exit
(`run_tool`), instead of a traceback: status 2 for a usage error (a flag or config field that cannot be used), 1
for a failure (data, checkpoints, the workdir, the disk). `EMVGAN_VERBOSE=1` keeps the traceback.

This module imports absl, ml_collections and the standard library only: every command imports it before parsing
its flags.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from absl import app, flags
from ml_collections.config_flags import config_flags

from emvgan_jax import config_lib, errors

T = TypeVar("T")

USAGE_STATUS, FAILURE_STATUS = errors.USAGE_STATUS, errors.FAILURE_STATUS
# The boundary's pieces, under the names the tools and tests use (errors.py says what each does).
Exit, fail, one_line = errors.Exit, errors.fail, errors.one_line
verbose, take_process_flags, silence_leftovers, VERBOSE_ENV = (
  errors.verbose,
  errors.take_process_flags,
  errors.silence_leftovers,
  errors.VERBOSE_ENV,
)


def new_flag_values() -> flags.FlagValues:
  """A private flag set (`parse_flags` handles `--help`, which absl's `app.run` would add to the global set)."""
  return flags.FlagValues()


def short_help(doc: str) -> str:
  """What `--help` shows of a tool's docstring: its first paragraph and its usage (the paragraph starting
  'Usage' or 'Run'); the rest (design notes) stays in the module's docstring and docs/."""
  paragraphs = [p.strip("\n") for p in doc.strip().split("\n\n")]
  keep = [paragraphs[0]] + [p for p in paragraphs[1:] if p.lstrip().startswith(("Usage", "Run"))]
  return "\n\n".join(keep)


# Flags (and config fields, `--config.data.manual_dir`) whose values are paths: `$VAR` is expanded in them.
PATH_FLAG_ENDINGS = ("dir", "file", "path", "csv", "h5", "config", "configs", "out", "index", "inputs", "labels")


def expand_paths(argv: Sequence[str]) -> list[str]:
  """`argv` with every `--flag=~...` value expanded to the home folder, as a shell expands `--flag ~/x` but not
  `--flag=~/x` (a run would otherwise write into a folder literally named `~`); in a comma-separated list, each
  item. In a path flag (`PATH_FLAG_ENDINGS`), `$VAR` and `${VAR}` are expanded too, as a shell would outside
  single quotes. `--config=PATH[:arg]` is also looked up in the repository when PATH does not exist from here
  (`config_lib.resolve_config_path`)."""
  out = [argv[0]] if argv else []
  for arg in argv[1:]:
    name, sep, value = arg.partition("=")
    if arg.startswith("--") and sep and "$" in value and name.endswith(PATH_FLAG_ENDINGS):
      value = os.path.expandvars(value)  # $VAR and ${VAR} of the environment; unknown names stay as written
    if arg.startswith("--") and sep and "~" in value:
      value = ",".join(os.path.expanduser(v) if v.startswith("~") else v for v in value.split(","))
    if name == "--config" and sep:
      path, colon, rest = value.partition(":")
      value = config_lib.resolve_config_path(path) + colon + rest
    out.append(f"{name}{sep}{value}")
  return out


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str], help_text: str) -> list[str]:
  """Parses `argv` (program name first) into `flag_values`; prints `help_text` and the flags on `--help`.

  Raises:
    SystemExit: with an `error: ...` line on unknown flags, bad values or missing required flags.
  """
  flag_values.unparse_flags()  # a tool called twice in one process (tests) parses afresh
  argv = expand_paths(take_process_flags(argv))
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
  for name in MUST_EXIST:
    if name in flag_values and flag_values[name].value and not os.path.isdir(flag_values[name].value):
      fail(f"error: --{name}={flag_values[name].value} is not a folder: {MUST_EXIST[name]}", USAGE_STATUS)
  return rest


# Folder flags read from, never created: a wrong one is a usage error at once (a dataset already built elsewhere
# would otherwise hide it until the day it must be built).
MUST_EXIST = {"manual_dir": "give a copy of the EmoMV repository, or leave the flag out"}


def define_gallery_flags(flag_values: flags.FlagValues) -> dict[str, flags.FlagHolder]:
  """The flags that name a gallery (`retrieve` and `index` take the same), keyed by the arguments of
  `evaluation.retrieval.load_gallery`."""

  def string(name: str, help_text: str) -> flags.FlagHolder:
    return flags.DEFINE_string(name, None, help_text, flag_values=flag_values)

  return {
    "dataset": string("dataset", "EmoMV set whose gallery to use (default: the run's)."),
    "csv": string("gallery_csv", "Your own gallery CSV (EmoMV retrieval layout)."),
    "video_h5": string("gallery_video_h5", "Video features of --gallery_csv."),
    "music_h5": string("gallery_music_h5", "Music features of --gallery_csv."),
    "data_dir": string("data_dir", "TFDS data dir (default: the run's)."),
    "manual_dir": string("manual_dir", "Local EmoMV copy (default: the run's, then $EMOMV_DIR)."),
  }


def parse_ints(values: Sequence[str], flag: str) -> list[int]:
  """The integers of a list flag (`--seeds=0,1,2`); anything else is a UsageError naming the flag."""
  try:
    return [int(v) for v in values]
  except ValueError:
    raise errors.UsageError(f"--{flag} must be comma-separated integers, got {','.join(values)}") from None


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
    import jax  # deferred: JAX loads once the flags are parsed

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def known_errors() -> tuple[type[BaseException], ...]:
  """The exceptions whose message is itself the advice: shown as one line, without a traceback."""
  from tfds_emomv.emomv import files  # deferred: TFDS, and only once a command has failed

  return (files.EmoMVFormatError,)


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


HELP_ARGS = ("-h", "-?", "-help", "--help", "--helpshort", "--helpfull")
VERBOSE_HELP = errors.PROCESS_FLAGS_HELP  # the flags every command takes


def run_app(main: Callable[[list[str]], None], help_text: str) -> None:
  """absl's `app.run` for the tools whose flags are absl's global ones (`main`, `benchmark`): `--help` in any
  spelling prints the tool's description and its own flags and exits 0 (absl's exits 1, and its --helpfull
  lists every library's flags), and `--verbose` is taken as everywhere else."""

  sys.argv = expand_paths(take_process_flags(sys.argv))
  if any(arg in HELP_ARGS for arg in sys.argv[1:]):
    print(short_help(help_text) + "\n")
    print(flags.FLAGS.module_help(main.__module__))  # `__main__`, or the module of a console script
    print(VERBOSE_HELP)
    sys.exit(0)
  run_tool(lambda: app.run(main, flags_parser=_parse_global_flags))


def _parse_global_flags(argv: list[str]) -> list[str]:
  """absl's parse of the global flags, with its errors and ml_collections' (a config file that cannot be loaded,
  an override naming no field) as one `error: ...` line and exit status 2 instead of a traceback."""

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
  except OSError as e:  # an override of a config file that does not exist: the override reads it first
    name = next((a[2:].split(".")[0] for a in argv[1:] if a.startswith("--") and "." in a.split("=")[0]), "config")
    _config_not_loaded(name, argv, e)
  error_config = getattr(config_flags, "_ErrorConfig", None)  # a config file that failed to load, kept lazy
  for name in flags.FLAGS:
    value = flags.FLAGS[name].value
    if error_config and isinstance(value, error_config):
      try:
        value.keys()
      except OSError as e:
        _config_not_loaded(name, argv, e)
  return rest


def _config_not_loaded(name: str, argv: Sequence[str], e: OSError) -> None:
  """The one line for a `--config` file that cannot be read (a wrong path, with or without overrides)."""
  reason = one_line(e).split(";")[-1].strip()
  given = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{name}=")), "?")
  fail(
    f"error: --{name}={given}: {reason}; give the path of a config file, e.g. configs/emomv_c.py (looked up "
    f"from {os.getcwd()}, then in the repository, {config_lib.REPO_ROOT})",
    USAGE_STATUS,
  )


def run_tool(body: Callable[[], T]) -> T:
  """Runs `body()` inside the one error boundary (`errors.guard`), with the EmoMV reader's errors also shown as
  one line."""
  return errors.guard(body, known_errors)


def command(main: Callable[[Sequence[str] | None], None]) -> Callable[[Sequence[str] | None], None]:
  """A tool's `main(argv=None)` (and console script) running wholly inside the boundary, flag parsing included."""

  @functools.wraps(main)
  def entry(argv: Sequence[str] | None = None) -> None:
    run_tool(lambda: main(argv))

  return entry
