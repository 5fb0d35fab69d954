"""Fault injection: a run killed inside its save sequence, interrupted by a signal, sharing its workdir, resumed
with another config, or restored from damaged checkpoint files. Each case either gives the result of the
uninterrupted run or a one-line error naming what is wrong (issue "A run that never lies")."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import helpers
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_main

from emvgan_jax import config_lib, train
from emvgan_jax.runtime import checkpoint as ckpt_lib
from emvgan_jax.runtime import preemption
from emvgan_jax.runtime import workdir as workdir_lib
from emvgan_jax.tools import evaluate

REPO = str(helpers.REPO_ROOT)


def _config(data_dir, **overrides):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  config.data.data_dir = data_dir
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  return config


def _train_rows(workdir):
  """metrics.jsonl's train rows without the wall-clock rate (the one number a resume may change)."""
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8")]
  return [{k: v for k, v in r.items() if k != "train/steps_per_sec"} for r in rows]


def _comparable(results):
  return {k: v for k, v in results.items() if k not in ("train_seconds", "provenance")}  # times, dates


class _Crash(BaseException):
  """Stands for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.fixture(scope="module")
def reference(tiny_run, tmp_path_factory):
  """The uninterrupted run the faulty ones must reproduce (8 epochs, a checkpoint every 2)."""
  workdir = str(tmp_path_factory.mktemp("faults") / "reference")
  config = _config(tiny_run.data_dir, **{"train.num_epochs": 8})
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between_best_and_latest", "after_latest_before_its_checksums"])
def test_killed_inside_the_save_sequence_then_rerun_equals_uninterrupted(reference, tmp_path, monkeypatch, where):
  config, ref_dir, ref_results = reference
  workdir = str(tmp_path / "w")
  original_save, original_manifest = ckpt_lib.Checkpoints.save, ckpt_lib.Checkpoints._write_manifest
  calls = {"latest": 0}

  def save(self, kind, step, **kw):
    if kind == "latest":
      calls["latest"] += 1
      if calls["latest"] == 2 and where == "between_best_and_latest":
        raise _Crash
    return original_save(self, kind, step, **kw)

  def manifest(self, kind, step):
    if kind == "latest" and calls["latest"] == 2 and where == "after_latest_before_its_checksums":
      raise _Crash
    return original_manifest(self, kind, step)

  monkeypatch.setattr(ckpt_lib.Checkpoints, "save", save)
  monkeypatch.setattr(ckpt_lib.Checkpoints, "_write_manifest", manifest)
  with pytest.raises(_Crash):
    train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  results = train.train_and_evaluate(config, workdir)  # the same command again
  assert _comparable(results) == _comparable(ref_results)
  assert _train_rows(workdir) == _train_rows(ref_dir)  # every step once, the same rows


@pytest.mark.slow
def test_a_disk_too_full_for_a_checkpoint_stops_before_writing_and_a_rerun_resumes(reference, tmp_path, monkeypatch):
  config, ref_dir, ref_results = reference
  workdir = str(tmp_path / "w")
  real_usage, calls = shutil.disk_usage, []

  def usage(path):  # the disk fills up after the first checkpoint (step 2)
    calls.append(path)
    total, used, free = real_usage(path)
    return type(real_usage(path))(total, used, free if len(calls) == 1 else 4096)

  monkeypatch.setattr(shutil, "disk_usage", usage)
  message = r"cannot write the checkpoints of step 4 in .*: 0.0 MiB free, it needs about .* it continues from step 2"
  with pytest.raises(ckpt_lib.CheckpointSaveError, match=message):
    train.train_and_evaluate(config, workdir)
  checkpoints = ckpt_lib.Checkpoints(workdir, read_only=True)
  assert checkpoints.all_steps("latest") == [2] and not os.path.exists(os.path.join(workdir, "results.json"))
  leftovers = [n for kind in ckpt_lib.KINDS for n in os.listdir(os.path.join(workdir, "checkpoints", kind))]
  assert all(n.isdigit() for n in leftovers), leftovers  # nothing half-written
  monkeypatch.undo()
  results = train.train_and_evaluate(config, workdir)  # space freed: the same command again
  assert _comparable(results) == _comparable(ref_results)
  assert _train_rows(workdir) == _train_rows(ref_dir)


@pytest.mark.slow
def test_a_write_failing_inside_the_save_is_one_line_and_leaves_nothing_behind(tiny_run, tmp_path):
  """A file-size limit makes TensorStore's writes fail in the middle of the first save (as a full disk does, with
  EFBIG for ENOSPC): one line, exit 1, no half-written checkpoint, and the rerun trains from the start."""
  limited = (  # a write past the limit fails (SIGXFSZ ignored) instead of killing the process
    "import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY)); "
    "runpy.run_module('emvgan_jax.main', run_name='__main__')"
  )
  workdir = tmp_path / "w"
  # The compilation cache is read, never written (an entry past the limit would fail too): no entry is that big.
  env = helpers.subprocess_env(JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=str(1 << 62))
  flags = ["--config=configs/tiny.py", f"--workdir={workdir}", f"--config.data.data_dir={tiny_run.data_dir}"]
  flags += ["--config.train.num_epochs=4", "--compilation_cache_dir="]
  args = [sys.executable, "-m", "emvgan_jax.main", *flags]
  proc = subprocess.run(
    [sys.executable, "-c", limited, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: cannot write the '") and "File too large" in last, last
  assert last.endswith("it continues from the start (no checkpoint was complete)")
  assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) < 10, proc.stderr[-3000:]
  for kind in ckpt_lib.KINDS:  # no Orbax temporary directory, and no best without a latest
    assert os.listdir(workdir / "checkpoints" / kind) == [], kind
  # The rerun, without the limit, may use the compilation cache (which the limited run could not write to).
  proc = subprocess.run(args, cwd=REPO, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((workdir / "results.json").read_text())["checkpoint_step"] > 0


def test_a_save_failing_for_another_reason_keeps_its_traceback_and_orbax_log(tmp_path, monkeypatch, caplog):
  """Not the disk (a bug): the error propagates as it is, with what Orbax logged, and nothing hangs."""
  import logging  # pylint: disable=g-import-not-at-top

  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def broken_save(self, *args, **kwargs):
    record = logging.makeLogRecord(
      {
        "name": "orbax",
        "levelno": logging.ERROR,
        "levelname": "ERROR",
        "msg": "orbax's own account of it",
        "pathname": "/site-packages/orbax/checkpoint/x.py",
      }
    )
    logging.getLogger().handle(record)
    raise ValueError("a bug in the state")

  monkeypatch.setattr(ocp.CheckpointManager, "save", broken_save)
  checkpoints = ckpt_lib.Checkpoints(str(tmp_path))
  signal.alarm(30)  # a hang fails the test instead of the suite
  try:
    with pytest.raises(ValueError, match="a bug in the state"):
      checkpoints.save("latest", 1, state={"w": np.zeros(3)}, stats={}, meta={})
  finally:
    signal.alarm(0)
  assert "orbax's own account of it" in caplog.text


@pytest.fixture
def small_disk(tmp_path):
  """A 700 KB file system of its own (tmpfs), where mounting one is allowed (root in a container that permits
  it); the test is skipped elsewhere, and the simulated cases above still run."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  mount = ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount_point)]
  if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here (needs root and a container that allows mount)")
  yield mount_point
  subprocess.run(["umount", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_is_one_line_and_the_rerun_after_freeing_space_finishes(tiny_run, small_disk):
  workdir = small_disk / "w"
  env = helpers.subprocess_env()  # the compilation cache is on another disk than the workdir
  args = [sys.executable, "-m", "emvgan_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}"]
  args += [f"--config.data.data_dir={tiny_run.data_dir}", "--config.train.num_epochs=4", "--compilation_cache_dir="]
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: cannot write the checkpoints of step 2 in {workdir}/checkpoints: ")
  assert "MiB free" in last
  assert "Traceback" not in proc.stderr
  subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)  # space freed
  proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "results.json").exists()


@pytest.mark.slow
def test_interrupt_saves_latest_and_the_rerun_continues_exactly(reference, tmp_path, monkeypatch):
  config, ref_dir, ref_results = reference
  workdir = str(tmp_path / "w")

  def requested(self, step):  # SIGTERM arrives during step 5 (mid-epoch, between two checkpoints)
    if step == 5:
      self.signum = signal.SIGTERM
    return self.signum is not None

  monkeypatch.setattr(preemption.Interrupts, "requested", requested)
  with pytest.raises(preemption.Interrupted, match="stopped by SIGTERM at step 5: saved the latest checkpoint") as e:
    train.train_and_evaluate(config, workdir)
  assert e.value.exit_code == 128 + signal.SIGTERM
  checkpoints = ckpt_lib.Checkpoints(workdir, read_only=True)
  assert checkpoints.latest_step() == 5
  first_seconds = checkpoints.restore_meta("latest")[1]["train_seconds"]
  assert first_seconds > 0
  monkeypatch.undo()
  started = time.time()
  results = train.train_and_evaluate(config, workdir)
  assert _comparable(results) == _comparable(ref_results)
  assert _train_rows(workdir) == _train_rows(ref_dir)
  # The training time is the run's, across both processes: the first one's and the rerun's.
  assert first_seconds < results["train_seconds"] <= first_seconds + (time.time() - started) + 0.01


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_main_saves_and_exits_with_one_line(tiny_run, tmp_path, signum):
  workdir = tmp_path / "w"
  env = helpers.subprocess_env()
  args = [sys.executable, "-m", "emvgan_jax.main", "--config=configs/tiny.py", f"--workdir={workdir}"]
  args += [f"--config.data.data_dir={tiny_run.data_dir}", "--config.train.num_epochs=100000"]
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").stat().st_size:
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.2)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signum
  (line,) = [x for x in err.splitlines() if x.startswith("interrupted:")]
  assert f"stopped by {signal.Signals(signum).name} at step" in line and "rerun the same command" in line
  step = int(line.split("at step ")[1].split(":")[0])
  assert ckpt_lib.Checkpoints(str(workdir), read_only=True).latest_step() == step
  assert "Traceback" not in err


def _free_port() -> int:
  import socket  # pylint: disable=g-import-not-at-top

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# The features dataset with its train split (6 rows, 0.056 MB) left on disk and its validation and gallery (4 rows
# each) in memory: each process reads only its share of every train batch from the array_record shards, and takes
# its share of every evaluation batch from host memory.
_MIXED = ["--config.data.dataset=features", "--config.data.layout=c", "--config.data.stream_above_mb=0.045"]


@pytest.mark.slow
def test_two_processes_stop_together_on_sigterm_resume_and_equal_one_process(tiny_run, tmp_path):
  """The code path of a multi-host pod, two processes of 2 devices on loopback: SIGTERM to one (a host preempted)
  stops both at the same step through the coordination service; the same command resumes both there; and the
  finished run equals one process of 4 devices trained without a stop."""
  workdir = tmp_path / "multi"
  common = ["--config=configs/tiny.py", f"--config.data.data_dir={tiny_run.data_dir}", *_MIXED]

  def launch(process_id, port, *extra):
    args = [sys.executable, "-m", "emvgan_jax.main", *common, f"--workdir={workdir}", *extra]
    args += ["--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    args += [f"--process_id={process_id}"]
    env = helpers.subprocess_env(2)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

  port = _free_port()
  procs = [launch(i, port, "--config.train.num_epochs=100000") for i in range(2)]
  deadline = time.time() + 240
  while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").stat().st_size:
    assert all(p.poll() is None for p in procs) and time.time() < deadline, [p.communicate() for p in procs]
    time.sleep(0.2)
  procs[0].send_signal(signal.SIGTERM)  # one host preempted
  errs = [p.communicate(timeout=120)[1] for p in procs]
  steps = []
  for p, err in zip(procs, errs):
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("interrupted:")]
    steps.append(int(line.split("at step ")[1].split(":")[0]))
  assert "JAX process 1 of 2; 2 local / 4 global devices" in errs[1]
  disk = [line for line in errs[1].splitlines() if "read from disk a batch at a time" in line]
  assert len(disk) == 1 and "train: 6 rows" in disk[0], disk  # the other splits in memory
  assert steps[0] == steps[1] and ckpt_lib.Checkpoints(str(workdir), read_only=True).latest_step() == steps[0]

  # The same command again, told to stop two steps later; beside it, one process of 4 devices trains that far.
  until = f"--config.train.max_steps={steps[0] + 2}"
  port = _free_port()
  procs = [launch(i, port, "--config.train.num_epochs=100000", until) for i in range(2)]
  single_args = [*common, f"--workdir={tmp_path / 'single'}", "--config.train.num_epochs=100000", until]
  single = subprocess.Popen(
    [sys.executable, "-m", "emvgan_jax.main", *single_args],
    cwd=REPO,
    env=helpers.subprocess_env(4),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for p in procs:
    err = p.communicate(timeout=240)[1]
    assert p.returncode == 0, err[-3000:]
    assert f"Resumed from the latest checkpoint at step {steps[0]}" in err
  single_err = single.communicate(timeout=240)[1]
  assert single.returncode == 0, single_err[-3000:]
  train_steps = [r["step"] for r in _train_rows(str(workdir)) if "train/loss" in r]
  assert train_steps == list(range(1, steps[0] + 3))  # every step once

  multi = json.loads((workdir / "results.json").read_text())
  one = json.loads((tmp_path / "single" / "results.json").read_text())
  assert multi["checkpoint_step"] == one["checkpoint_step"]
  for block in ("classification", "retrieval"):
    helpers.assert_results_close(multi[block], one[block], block, abs_tol=1e-5)
  losses = [[r["train/loss"] for r in _train_rows(str(w)) if "train/loss" in r] for w in (workdir, tmp_path / "single")]
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_a_second_run_on_a_locked_workdir_is_refused(tmp_path):
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  holder = workdir_lib.WorkdirLock(workdir)
  holder.acquire()
  try:
    with pytest.raises(workdir_lib.WorkdirError, match=rf"in use by another run \(process {os.getpid()} on "):
      train.train_and_evaluate(_config(str(tmp_path / "tfds")), workdir)  # refused before any data is read
  finally:
    holder.release()
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))  # nothing written
  # Released (or its process gone): the next claim takes it.
  workdir_lib.WorkdirLock(workdir).acquire()


@pytest.fixture()
def tiny_copy(tiny_run, tmp_path):
  """A copy of the shared tiny run that a test may damage."""
  workdir = tmp_path / "run"
  shutil.copytree(tiny_run.workdir, workdir)
  return workdir


@pytest.mark.slow
def test_resume_with_another_config_is_refused_naming_the_fields(tiny_run, tiny_copy):
  config = _config(tiny_run.data_dir, seed=1, **{"emvgan.hidden": 32})
  with pytest.raises(workdir_lib.WorkdirError, match=r"another config \(.*emvgan.hidden: 16 -> 32.*seed: 0 -> 1"):
    train.train_and_evaluate(config, str(tiny_copy))
  # A longer run of the same config is a resume, not another run.
  workdir_lib.check_same_run(_config(tiny_run.data_dir, **{"train.num_epochs": 9}), str(tiny_copy))


@pytest.mark.slow
def test_a_damaged_config_json_is_one_line_naming_it(tiny_run, tiny_copy):
  path = tiny_copy / "config.json"
  path.write_text(path.read_text()[:100])  # cut short
  with pytest.raises(workdir_lib.WorkdirError, match=r"config\.json is damaged .*--restart"):
    workdir_lib.check_same_run(_config(tiny_run.data_dir), str(tiny_copy))


@pytest.mark.slow
def test_restart_starts_over_saying_what_it_deletes(tiny_run, tiny_copy, caplog):
  (tiny_copy / "eval" / "emomv_c-best").mkdir(parents=True)
  (tiny_copy / "eval" / "emomv_c-best" / "embeddings.npz").write_bytes(b"")
  config = _config(tiny_run.data_dir, seed=1, **{"train.num_epochs": 2})
  with caplog.at_level(logging.WARNING):
    results = train.train_and_evaluate(config, str(tiny_copy), restart=True)
  assert results["seed"] == 1
  said = [r.getMessage() for r in caplog.records if "--restart deletes" in r.getMessage()]
  assert said and "checkpoints/" in said[0] and "results.json" in said[0] and "eval/ holds emomv_c-best" in said[0]
  assert not (tiny_copy / "eval").exists()
  rows = _train_rows(str(tiny_copy))
  assert len({r["step"] for r in rows if "train/loss" in r}) == len([r for r in rows if "train/loss" in r])


def _largest_file(directory):
  files = [os.path.join(b, n) for b, _, names in os.walk(directory) for n in names]
  return max(files, key=os.path.getsize)


def _best_dir(workdir):
  best = ckpt_lib.Checkpoints(str(workdir), read_only=True).latest_step("best")
  return os.path.join(workdir, "checkpoints", "best", str(best))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbled", "truncated", "deleted"])
def test_damaged_checkpoint_file_is_a_one_line_error_naming_it(tiny_copy, damage):
  path = _largest_file(_best_dir(tiny_copy))
  if damage == "garbled":
    with open(path, "r+b") as f:
      f.seek(os.path.getsize(path) // 2)
      f.write(bytes(16))
  elif damage == "truncated":
    os.truncate(path, os.path.getsize(path) // 2)
  else:
    os.remove(path)
  code = run_main(evaluate, [f"--workdir={tiny_copy}", "--noplots"])
  assert isinstance(code, str) and code.startswith("error: ") and "\n" not in code
  assert path in code
  assert ("is missing" if damage == "deleted" else "is damaged") in code
  assert "--checkpoint=latest" in code  # what to do


@pytest.mark.slow
def test_partly_deleted_checkpoints_are_never_silently_trained_over(tiny_run, tiny_copy):
  shutil.rmtree(tiny_copy / "checkpoints" / "latest")
  with pytest.raises(ckpt_lib.CheckpointCorruptError, match="has a 'best' checkpoint .* but no 'latest' one"):
    train.train_and_evaluate(_config(tiny_run.data_dir), str(tiny_copy))
  shutil.rmtree(tiny_copy / "checkpoints")
  with pytest.raises(workdir_lib.WorkdirError, match="has results.json but none of the checkpoints"):
    train.train_and_evaluate(_config(tiny_run.data_dir), str(tiny_copy))


def test_metrics_jsonl_is_cut_back_to_the_restored_step(tmp_path):
  from emvgan_jax.runtime import logger as logger_lib  # pylint: disable=g-import-not-at-top

  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "x": float(s)}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "x"')
  logger = logger_lib.MetricLogger(
    str(tmp_path), enabled=True, log_every=1, total_steps=9, initial_step=2, progress_bar=False
  )
  logger.write(3, {"x": 30.0})
  logger.close()
  rows = [json.loads(line) for line in path.read_text().splitlines()]
  assert [(r["step"], r["x"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_unfinished_log_window_travels_in_the_checkpoint(tmp_path):
  from emvgan_jax.runtime import logger as logger_lib  # pylint: disable=g-import-not-at-top

  def make(workdir):
    return logger_lib.MetricLogger(
      str(workdir), enabled=True, log_every=4, total_steps=9, initial_step=0, progress_bar=False
    )

  os.makedirs(tmp_path / "a")
  os.makedirs(tmp_path / "b")
  whole = make(tmp_path / "a")
  for s in (1, 2, 3, 4):
    whole.record_step(s, {"loss": jnp.asarray(s, jnp.float32)}, epoch=0)
  whole.close()
  first = make(tmp_path / "b")
  for s in (1, 2):
    first.record_step(s, {"loss": jnp.asarray(s, jnp.float32)}, epoch=0)
  window = first.pending_json()  # what a save at step 2 stores
  first.close()
  second = logger_lib.MetricLogger(
    str(tmp_path / "b"), enabled=True, log_every=4, total_steps=9, initial_step=2, progress_bar=False
  )
  second.restore_pending(json.loads(json.dumps(window)))
  for s in (3, 4):
    second.record_step(s, {"loss": jnp.asarray(s, jnp.float32)}, epoch=0)
  second.close()
  assert _train_rows(tmp_path / "a") == _train_rows(tmp_path / "b")
  assert _train_rows(tmp_path / "a") == [{"step": 4, "train/loss": 2.5}]


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("train.batch_size", 0, "config.train.batch_size=0 must be a positive integer"),
    ("train.batch_size", -4, "config.train.batch_size=-4 must be a positive integer"),
    ("train.eval_batch_size", 0, "config.train.eval_batch_size=0 must be a positive integer"),
    ("train.checkpoint_every_epochs", 0, "config.train.checkpoint_every_epochs=0 must be a positive integer"),
    ("train.log_every_steps", 0, "must be a positive integer"),
    ("optim.learning_rate", 0.0, "config.optim.learning_rate=0.0 must be positive"),
    ("emvgan.dropout_rate", 1.0, r"must be in \[0, 1\)"),
    ("loss.temperature", -0.1, "must be positive"),
    ("data.dataset", "emomv/d", "is not one of"),
    ("train.selection_metric", "gallery/mAP", "is not computed for EMVGAN; choose one of"),
    ("train.selection_mode", "up", "must be 'min' or 'max'"),
    ("model", "transformer", "config.model must be one of"),
    ("loss.adv_mode", "wgan", "config.loss.adv_mode must be one of"),
    ("data.cv_folds", 1, "0 \\(off\\) or 2 or more"),
    ("train.batch_size", 3, "not divisible by the 8 devices"),
    ("train.accumulation_steps", 0, "must be a positive integer"),
    ("train.accumulation_steps", 3, "must split into 3 equal microbatches; make the batch a multiple of 24"),
    ("loss.nce_impl", "flash", "config.loss.nce_impl must be one of"),
    ("loss.nce_block_rows", 0, "must be a positive integer"),
    ("emvgan.compute_dtype", "float16", "config.emvgan.compute_dtype must be one of"),
  ],
)
def test_config_errors_are_found_before_anything_is_read_or_written(tmp_path, field, value, message):
  config = _config(str(tmp_path / "tfds"))
  config_lib.set_field(config, field, value)
  with pytest.raises(config_lib.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_accumulation_is_refused_for_the_baselines(tmp_path):
  config = _config(str(tmp_path / "tfds"), model="baseline")
  config_lib.set_field(config, "train.selection_metric", "pairs/loss")
  config_lib.set_field(config, "train.selection_mode", "min")
  config_lib.set_field(config, "train.accumulation_steps", 2)
  with pytest.raises(config_lib.ConfigError, match="gradient accumulation is built for EMVGAN only"):
    train.train_and_evaluate(config, str(tmp_path / "w"))


@pytest.mark.slow
def test_main_prints_a_config_error_as_one_line(tmp_path):
  env = helpers.subprocess_env()
  proc = subprocess.run(
    [sys.executable, "-m", "emvgan_jax.main", "--config=configs/tiny.py", f"--workdir={tmp_path / 'w'}"]
    + ["--config.train.batch_size=0"],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 2  # a usage error
  assert proc.stderr.strip().splitlines()[-1] == "error: config.train.batch_size=0 must be a positive integer"
  assert "Traceback" not in proc.stderr and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_damaged_built_dataset_names_its_folder(tmp_path):
  from emvgan_jax.data import splits  # pylint: disable=g-import-not-at-top
  from tfds_emomv.emomv import make_dummy_data  # pylint: disable=g-import-not-at-top

  data_dir = str(tmp_path / "tfds")
  splits.load_dataset("emomv/c", data_dir=data_dir, manual_dir=str(make_dummy_data.DEFAULT_DIR))
  (record,) = [os.path.join(b, n) for b, _, names in os.walk(data_dir) for n in names if "train.array_record" in n]
  with open(record, "r+b") as f:
    f.seek(os.path.getsize(record) // 3)
    f.write(b"\xff" * 64)
  with pytest.raises(splits.DataError, match=rf"{record} is damaged .*: the built dataset emomv/c cannot be trusted"):
    splits.load_dataset("emomv/c", data_dir=data_dir, manual_dir=str(make_dummy_data.DEFAULT_DIR))
