"""The commands as a user meets them: `--help` from any folder, before JAX loads; a usage error or a failure as one
line with its exit status; `~` and config paths expanded; the console scripts."""

import importlib.metadata
import os
import subprocess
import sys

import helpers
import pytest

from emvgan_jax import config_lib
from emvgan_jax.evaluation import metrics, search
from emvgan_jax.experiments import tune as tune_lib
from emvgan_jax.tools import cli, evaluate, retrieve, tune

REPO = str(helpers.REPO_ROOT)
# What a command must not import before its flags are parsed: each adds seconds to `--help`.
HEAVY = ("jax", "jaxlib", "flax", "orbax", "optax", "matplotlib", "sklearn", "tensorboardX", "grain", "torch")
COMMANDS = (  # (how to start it, whether it takes --verbose, whether it must answer before JAX)
  ("emvgan-train", True, True),
  ("emvgan-evaluate", True, True),
  ("emvgan-retrieve", True, True),
  ("emvgan-index", True, True),
  ("emvgan-sweep", True, True),
  ("emvgan-tune", True, True),
  ("emvgan-extract", True, True),
  ("emomv-build", True, True),
  ("emomv-synthetic", False, True),
  ("emomv-features", False, True),
  ("tfds_emomv.emomv.make_dummy_data", False, True),
  ("benchmarks.train_step", True, True),
  ("benchmarks.input_pipeline", True, True),
  ("benchmarks.search", True, True),
  ("benchmarks.accelerator", True, True),
  ("benchmarks.memory", True, True),
  ("benchmarks.startup", True, True),
  ("benchmarks.against", True, True),
)


def _start(command: str) -> list[str]:
  """The command line that starts `command`: a console script through its entry point (what its wrapper runs),
  a module with -m; both with -X importtime, which lists every module imported."""
  if command.startswith(("emvgan-", "emomv-")):
    scripts = importlib.metadata.entry_points(group="console_scripts")
    (entry,) = [e for e in scripts if e.name == command] or [None]
    if entry is None:
      pytest.skip(f"{command} is not installed (pip install -e .)")
    code = f"import sys; from {entry.module} import {entry.attr} as main; sys.argv[0] = {command!r}; main()"
    return [sys.executable, "-X", "importtime", "-c", code]
  return [sys.executable, "-X", "importtime", "-m", command]


def _run(command: str, args: list[str], cwd) -> subprocess.CompletedProcess:
  # Benchmarks are scripts of the repository, run from anywhere with it on the path.
  env = helpers.subprocess_env(PYTHONPATH=REPO)
  return subprocess.run([*_start(command), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _imported(stderr: str) -> set[str]:
  """The top-level packages `-X importtime` saw imported."""
  return {line.split("|")[-1].strip().split(".")[0] for line in stderr.splitlines() if line.startswith("import time:")}


def _messages(stderr: str) -> list[str]:
  return [line for line in stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.slow  # a fresh process each
@pytest.mark.parametrize(("command", "takes_verbose", "light"), COMMANDS, ids=[c for c, _, _ in COMMANDS])
def test_help_answers_from_any_folder_before_any_heavy_import(command, takes_verbose, light, tmp_path):
  proc = _run(command, ["--help"], tmp_path)
  assert proc.returncode == 0, "\n".join(_messages(proc.stderr))[-2000:]
  assert "--logtostderr" not in proc.stdout and "--flagfile" not in proc.stdout  # absl's and libraries' own
  assert not list(tmp_path.iterdir())  # nothing written (make_dummy_data once made a folder named --help)
  assert ("--verbose" in proc.stdout) == takes_verbose
  if light:
    assert not _imported(proc.stderr) & set(HEAVY), sorted(_imported(proc.stderr) & set(HEAVY))


@pytest.mark.slow  # a fresh process each
@pytest.mark.parametrize(
  "command, args, message",
  [
    ("emvgan-sweep", ["--workdir=/tmp/x"], "Flag --configs must have a value other than None"),
    ("emvgan-tune", ["--workdir=/tmp/x", "--candidate=a:b"], "error: --candidate='a:b': 'b' must be key=value"),
    ("emvgan-sweep", ["--workdir=/tmp/x", "--configs=configs/tiny.py", "--seeds=a"], "--seeds must be"),
    ("emvgan-evaluate", [], "Flag --workdir must have a value other than None"),
    ("emvgan-train", ["--config=configs/tiny.py", "--workdir=/tmp/x", "--config.train.batchsize=3"], "no field"),
    # A config path that does not exist, with an override (which reads the config first): once 58 lines.
    ("emvgan-train", ["--config=configs/emomv_d.py", "--workdir=/tmp/x", "--config.train.batch_size=64"], "d.py"),
    ("benchmarks.train_step", ["--config=configs/tiny.py", "--config.train.batch_size=0"], "must be a positive"),
    ("benchmarks.train_step", ["--config=configs/tiny.py", "--batch_sizes=0"], "--batch_sizes must be positive"),
  ],
)
def test_a_usage_error_is_one_line_with_status_2(command, args, message):
  proc = _run(command, args, REPO)
  lines = _messages(proc.stderr)
  assert proc.returncode == 2, "\n".join(lines)[-2000:]
  assert lines[-1].startswith("error: ") and message in lines[-1] and "Traceback" not in proc.stderr
  if command.startswith("emvgan-"):  # found while parsing the flags, before JAX loads
    assert not _imported(proc.stderr) & set(HEAVY)


@pytest.mark.parametrize(
  "error, expected",
  [
    (
      OSError(28, "No space left on device", "/w/checkpoints/latest"),
      "No space left on device (/w/checkpoints/latest): free",
    ),
    (PermissionError(13, "Permission denied", "/data/x.h5"), "Permission denied (/data/x.h5): check the permissions"),
  ],
)
def test_disk_full_and_permission_errors_name_the_path(error, expected, monkeypatch):
  def body():
    raise error

  monkeypatch.delenv(cli.VERBOSE_ENV, raising=False)
  with pytest.raises(SystemExit) as e:
    cli.run_tool(body)
  assert e.value.code == 1 and e.value.message.startswith(f"error: {expected}") and "\n" not in e.value.message
  monkeypatch.setenv(cli.VERBOSE_ENV, "1")  # the traceback, for whoever asks
  with pytest.raises(type(error)):
    cli.run_tool(body)


def test_usage_errors_exit_2_and_failures_exit_1(tmp_path):
  def status(module, argv):
    try:
      module.main([module.__name__] + argv)
    except SystemExit as e:
      return e.code, getattr(e, "message", "")
    return 0, ""

  code, message = status(retrieve, [f"--workdir={tmp_path}", "--direction=sideways", "--query=x"])
  assert code == 2 and message.startswith("error: flag --direction=sideways")
  code, message = status(evaluate, ["--nonsense"])
  assert code == 2 and message.startswith("error: ") and "see --help" in message
  code, message = status(evaluate, [f"--workdir={tmp_path}"])  # a failure: nothing trained there
  assert code == 1 and message.startswith("error: No 'best' checkpoint")
  assert status(evaluate, ["--help"])[0] == 0


def test_build_reports_an_unreadable_file_in_one_line(monkeypatch, capsys):
  from absl import flags

  from tfds_emomv import build

  def unreadable(*args, **kwargs):
    raise PermissionError(13, "Permission denied", "/copy/DS3_EmoMV_C/x.h5")

  monkeypatch.setattr(build, "build_one", unreadable)
  flags.FLAGS(["build", "--datasets=emomv/c", "--data_dir=/tmp/unused"])
  try:
    with pytest.raises(SystemExit) as e:
      build.main(["build"])
  finally:
    flags.FLAGS.unparse_flags()
  assert e.value.code == 1
  assert "error: cannot build emomv/c: Permission denied (/copy/DS3_EmoMV_C/x.h5)" in capsys.readouterr().err


def test_verbose_is_taken_in_absl_spellings(monkeypatch):
  monkeypatch.setenv(cli.VERBOSE_ENV, "0")
  monkeypatch.setenv("EMVGAN_ALLOW_RANDOM_FEATURES", "0")  # restored after the test
  assert cli.take_process_flags(["tool", "--verbose=True", "--k=3"]) == ["tool", "--k=3"] and cli.verbose()
  assert cli.take_process_flags(["tool", "--noverbose"]) == ["tool"] and not cli.verbose()
  assert cli.take_process_flags(["tool", "--allow_random_features"]) == ["tool"]
  assert os.environ["EMVGAN_ALLOW_RANDOM_FEATURES"] == "1"


def test_home_and_variables_are_expanded_in_path_flags_and_configs_are_found_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # not the repository: configs/ is not here
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  home = str(tmp_path / "home")
  argv = ["tool", "--workdir=~/w", "--inputs=~/a.mp4,b.mp4,~/c", "--config=configs/tiny.py:baseline", "--k=3"]
  assert cli.expand_paths(argv) == [
    "tool",
    f"--workdir={home}/w",
    f"--inputs={home}/a.mp4,b.mp4,{home}/c",
    f"--config={REPO}/configs/tiny.py:baseline",
    "--k=3",
  ]
  monkeypatch.setenv("DATA", "/data")
  argv = ["tool", "--data_dir=$DATA/tfds", "--config.data.manual_dir=${DATA}/copy", "--figure=a$DATA", "--out=$NOPE/x"]
  assert cli.expand_paths(argv)[1:] == [
    "--data_dir=/data/tfds",
    "--config.data.manual_dir=/data/copy",
    "--figure=a$DATA",  # not a path
    "--out=$NOPE/x",  # not set: as written, which the command then reports as a missing path
  ]
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "tiny.py").write_text("raise SystemExit('a config of its own')\n")
  assert cli.expand_paths(["tool", "--config=configs/tiny.py"])[1] == "--config=configs/tiny.py"  # here first
  assert config_lib.load_config_file("configs/emomv_c.py").model == "emvgan"  # the repository's
  with pytest.raises(config_lib.ConfigError, match=f"looked up from {tmp_path}, then in the repository, {REPO}"):
    config_lib.load_config_file("configs/nope.py")


def test_the_flag_choices_written_out_for_help_are_the_librarys():
  assert retrieve.DIRECTIONS == metrics.DIRECTIONS
  assert retrieve.SCORE_DTYPES == search.SCORE_DTYPES and retrieve.DEFAULT_CHUNK_SIZE == search.DEFAULT_CHUNK_SIZE
  assert set(tune.GRID_NAMES) == set(tune_lib.GRIDS)
