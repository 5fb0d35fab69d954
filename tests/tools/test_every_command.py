"""Every command, started as a user starts it (a fresh process), against a usage mistake, a missing input, a full
disk and an interrupt: each ends in one line (`error: ...` or `interrupted ...`) with no traceback, with status 2
for a usage mistake and 1 for a failure, and leaves no partial output; after a failure or a kill, the same command
run again succeeds. A new command is covered by adding it to `COMMANDS`.

The full disk is a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write fails with EFBIG instead
of killing the process), which needs no privileges; the interrupts are SIGINT, SIGTERM and SIGKILL at set moments
after the start.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import h5py
import helpers
import numpy as np
import pytest

REPO = helpers.REPO_ROOT
DUMMY = REPO / "tfds_emomv" / "emomv" / "dummy_data"


@dataclasses.dataclass(frozen=True)
class Where:
  """The inputs a command may use: a finished tiny run (a copy of its own) and a folder to write into."""

  workdir: pathlib.Path
  data_dir: str
  out: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Command:
  """A command and how to get each outcome out of it.

  Attributes:
    module: what `python -m` runs (the console script calls the same function).
    usage: arguments with a usage mistake (status 2).
    missing: arguments naming an input that does not exist (status 1, the path named).
    writes: arguments that write (given the inputs), and the folder whose content must be whole; None for a
      command that writes nothing, or whose writes are tested elsewhere (the comment says where).
    signals: what to send it while it works; SIGINT and SIGTERM take the same path through `errors.guard`, so
      each command gets one of them, and SIGKILL; none where the comment says why.
    moment: when to send them: once a file whose name holds this appears under the folder.
    missing_status: 2 where the missing input is a flag's value, checked before the command runs.
  """

  module: str
  usage: Callable[[Where], list[str]]
  missing: Callable[[Where], list[str]]
  writes: Callable[[Where], tuple[list[str], pathlib.Path]] | None = None
  signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL)
  moment: str = ".partial-"
  missing_status: int = 1


COMMANDS = {
  # Interrupts and kills at every moment of a checkpoint save, and full disks inside one: tests/runtime/test_faults.py.
  "train": Command(
    "emvgan_jax.main",
    usage=lambda w: ["--config=configs/tiny.py", f"--workdir={w.out}", "--config.train.no_such_field=1"],
    missing=lambda w: [
      "--config=configs/tiny.py",
      f"--workdir={w.out}",
      f"--config.data.manual_dir={w.out}/none",
      "--compilation_cache_dir=",
    ],
    writes=None,  # writes into a checkpoint save, interrupted and killed there: tests/runtime/test_faults.py
  ),
  "evaluate": Command(
    "emvgan_jax.tools.evaluate",
    usage=lambda w: [f"--workdir={w.workdir}", "--checkpoint=newest"],
    missing=lambda w: [f"--workdir={w.out}/none"],
    writes=lambda w: ([f"--workdir={w.workdir}", "--export_embeddings", f"--out_dir={w.out}/eval"], w.out),
    signals=(signal.SIGINT, signal.SIGKILL),
    moment=".png.partial-",  # while it draws its plots, the last seconds of a run
  ),
  "retrieve": Command(
    "emvgan_jax.tools.retrieve",
    usage=lambda w: [f"--workdir={w.workdir}", "--direction=video_to_music"],  # no query
    missing=lambda w: [f"--workdir={w.workdir}", "--direction=video_to_music", f"--query_file={w.out}/none.npy"],
    missing_status=2,
  ),
  "index": Command(
    "emvgan_jax.tools.index",
    usage=lambda w: [f"--workdir={w.workdir}", "--modality=sound", f"--out={w.out}/index"],
    missing=lambda w: [f"--workdir={w.out}/none", "--modality=music", f"--out={w.out}/index"],
    writes=lambda w: ([f"--workdir={w.workdir}", "--modality=music", f"--out={w.out}/index"], w.out),
    signals=(),  # a tiny index is written in milliseconds, and never over an existing one
  ),
  "sweep": Command(
    "emvgan_jax.tools.sweep",
    usage=lambda w: [f"--workdir={w.out}", "--seeds=zero", "--configs=configs/tiny.py"],
    missing=lambda w: [f"--workdir={w.out}", "--seeds=0", f"--configs={w.out}/none.py"],
    missing_status=2,
    # A peer fitted on the dummy data (seconds): the runs' results.json, then the tables.
    writes=lambda w: (
      [f"--workdir={w.out}/sweep", "--seeds=0", "--configs=configs/peers.py:logreg", f"--data_dir={w.data_dir}"]
      + [f"--manual_dir={DUMMY}"],
      w.out,
    ),
    moment=".lock",  # a run's workdir is claimed: the peer is being fitted (its files take milliseconds)
  ),
  "tune": Command(
    "emvgan_jax.tools.tune",
    usage=lambda w: [f"--workdir={w.out}", "--seeds=zero"],
    missing=lambda w: [f"--workdir={w.out}", f"--manual_dir={w.out}/none"],
    missing_status=2,
    # One EMVGAN candidate of two steps on the dummy data (seconds): its run, then tuning.md.
    writes=lambda w: (
      [f"--workdir={w.out}/tune", "--grid=none", "--baselines=", "--holdout_seeds=0", "--holdout_fraction=0.5"]
      + ["--candidate=quick:train.max_steps=2,train.eval_every_steps=1", f"--data_dir={w.data_dir}"]
      + [f"--manual_dir={DUMMY}"],
      w.out,
    ),
    moment=".lock",  # the run's workdir is claimed: it is training
  ),
  "extract": Command(
    "emvgan_jax.tools.extract",
    usage=lambda w: [f"--out_dir={w.out}", "--weights=random"],  # no --inputs
    missing=lambda w: [f"--out_dir={w.out}", "--weights=random", f"--inputs={w.out}/none.mp4"],
    missing_status=2,
    writes=lambda w: (
      [f"--inputs={w.out / 'clips'}", f"--out_dir={w.out / 'features'}", "--weights=random", "--modalities=music"],
      w.out,
    ),
    signals=(),  # its files are written in the last milliseconds, after every clip is extracted
  ),
  "emomv-build": Command(
    "tfds_emomv.build",
    usage=lambda w: ["--datasets=emomv/z", f"--data_dir={w.out}"],
    missing=lambda w: ["--datasets=emomv/c", f"--data_dir={w.out}", f"--manual_dir={w.out}/none"],
    writes=lambda w: (["--datasets=emomv/c", f"--data_dir={w.out}/tfds", f"--manual_dir={DUMMY}"], w.out),
  ),
  "emomv-features": Command(
    "tfds_emomv.features",
    usage=lambda w: [f"--data_dir={w.out}"],  # no --manual_dir
    missing=lambda w: [f"--data_dir={w.out}", f"--manual_dir={w.out}/none"],
    writes=lambda w: ([f"--data_dir={w.out}/features", f"--manual_dir={DUMMY}", "--layout=c"], w.out),
    signals=(signal.SIGINT,),
  ),
  "emomv-synthetic": Command(
    "tfds_emomv.synthetic",
    usage=lambda w: [f"--out_dir={w.out}", "--num_pairs=3"],
    missing=lambda w: [f"--out_dir={w.out}/file/below", "--num_pairs=1000"],
    writes=lambda w: ([f"--out_dir={w.out}/synthetic", "--num_pairs=40000"], w.out),
  ),
}


@pytest.fixture
def where(tiny_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(tiny_run.workdir, workdir)
  out = tmp_path / "out"
  out.mkdir()
  (out / "file").write_text("a file where a folder is expected")
  (out / "clips").mkdir()
  helpers.write_media(out / "clips" / "clip.mp4", seconds=1.0)  # for extract
  return Where(workdir=workdir, data_dir=tiny_run.data_dir, out=out)


# Sets the file-size limit, then becomes the command (exec keeps the limit and the ignored SIGXFSZ): a launcher,
# because a `preexec_fn` would run Python in a child forked from this multithreaded (JAX) process.
_LIMITED = (
  "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); n = int(sys.argv[1]); "
  "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])"
)


def _start(command: Command, argv: list[str], limit_bytes: int | None = None) -> subprocess.Popen:
  """The command as a user starts it; with `limit_bytes`, no file it writes may grow past that (a full disk)."""
  launch = [sys.executable, "-c", _LIMITED, str(limit_bytes)] if limit_bytes else []
  return subprocess.Popen(
    [*launch, sys.executable, "-m", command.module, *argv],
    cwd=REPO,
    # The tests' compilation cache, but where the cache's own writes would meet the limit.
    env=helpers.subprocess_env(**({"JAX_COMPILATION_CACHE_DIR": ""} if limit_bytes else {})),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
  _, err = proc.communicate(timeout=timeout)
  return proc.returncode, err


def _assert_one_line(status: int, stderr: str, want_status: int, starts: str = "error: ") -> str:
  """The command ended with `want_status` and said why in its last line, with no traceback before it."""
  assert "Traceback" not in stderr, stderr[-3000:]
  last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
  assert status == want_status, (status, stderr[-2000:])
  assert last.startswith(starts), stderr[-2000:]
  return last


def _assert_whole(folder: pathlib.Path, *, killed: bool = False) -> None:
  """Every file under `folder` is complete (it parses as its kind) and no partial file is left (`killed`: a
  process killed outright may leave its hidden partial files, which its next run deletes)."""
  for path in folder.rglob("*"):
    if ".partial-" in str(path.relative_to(folder)):
      assert killed, path
      continue
    if not path.is_file():
      continue
    if path.suffix == ".json":
      json.loads(path.read_text())
    elif path.suffix == ".png":
      helpers.assert_valid_png(path)
    elif path.suffix in (".npz", ".npy"):
      np.load(path)
    elif path.suffix == ".h5":
      with h5py.File(path, "r") as f:
        for key in f:
          np.asarray(f[key][:1])


def test_the_list_names_every_command():
  """Each console script (setup.cfg) is in COMMANDS, so that a new command cannot skip these checks."""
  parser = configparser.ConfigParser()
  parser.read(REPO / "setup.cfg")
  scripts = dict(line.split("=", 1) for line in parser["options.entry_points"]["console_scripts"].split("\n") if line)
  modules = {target.strip().split(":")[0] for target in scripts.values()}
  assert modules == {c.module for c in COMMANDS.values()}


@pytest.mark.slow  # a fresh process each
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_usage_mistake_is_one_line_and_status_2(name, tmp_path):
  where = Where(workdir=tmp_path / "run", data_dir=str(tmp_path / "tfds"), out=tmp_path)
  status, err = _finish(_start(COMMANDS[name], COMMANDS[name].usage(where)))
  _assert_one_line(status, err, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_missing_input_is_one_line_naming_it(name, where):
  argv = COMMANDS[name].missing(where)
  status, err = _finish(_start(COMMANDS[name], argv))
  last = _assert_one_line(status, err, COMMANDS[name].missing_status)
  named = [a.split("=", 1)[1] for a in argv if "none" in a or "/file/" in a]
  assert any(path.split("/file/")[0] in last or path in last for path in named), last


WRITERS = sorted(name for name, c in COMMANDS.items() if c.writes)


@pytest.mark.slow
@pytest.mark.parametrize("name", WRITERS)
def test_a_full_disk_is_one_line_leaves_nothing_partial_and_a_rerun_succeeds(name, where):
  argv, folder = COMMANDS[name].writes(where)
  status, err = _finish(_start(COMMANDS[name], argv, limit_bytes=512))
  last = _assert_one_line(status, err, 1)
  assert "File too large" in last or "space" in last, last
  _assert_whole(folder)
  status, err = _finish(_start(COMMANDS[name], argv))
  assert status == 0, err[-2000:]
  _assert_whole(folder)


def _signal_while_writing(
  proc: subprocess.Popen, folder: pathlib.Path, signum: int, moment: str, timeout: float = 120
) -> bool:
  """Sends `signum` once a file named with `moment` (or TFDS's incomplete folder) appears under `folder`; False
  when the command finished first."""
  end = time.monotonic() + timeout
  while proc.poll() is None and time.monotonic() < end:
    if any(moment in p.name or "incomplete" in p.name for p in folder.rglob("*")):
      proc.send_signal(signum)
      return True
    time.sleep(0.005)
  return False


INTERRUPTED = [(name, signum) for name, c in sorted(COMMANDS.items()) if c.writes for signum in c.signals]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "signum"), INTERRUPTED, ids=[f"{n}-{signal.Signals(s).name}" for n, s in INTERRUPTED])
def test_an_interrupt_while_writing_leaves_nothing_partial_and_a_rerun_succeeds(name, signum, where):
  argv, folder = COMMANDS[name].writes(where)
  proc = _start(COMMANDS[name], argv)
  assert _signal_while_writing(proc, folder, signum, COMMANDS[name].moment), "it finished before the moment"
  status, err = _finish(proc)
  if signum != signal.SIGKILL and status != 0:  # status 0: it finished just as the signal came
    _assert_one_line(status, err, 128 + signum, starts="interrupted")
  _assert_whole(folder, killed=signum == signal.SIGKILL)
  status, err = _finish(_start(COMMANDS[name], argv))
  assert status == 0, err[-2000:]
  _assert_whole(folder)  # the rerun also deleted what a killed process left
