"""What the benchmark scripts compute besides timing: a run's phases from its log lines."""

import time

import pytest

from benchmarks import startup


def test_phases_of_a_run_from_its_log_lines_across_midnight():
  start = time.mktime((2026, 12, 1, 23, 59, 58, 0, 0, -1)) + 0.5  # 23:59:58.5, local time
  stderr = "\n".join(
    [
      "I1201 23:59:59.500000 140 main.py:68] JAX process 0 of 1; 1 local / 1 global devices",
      "some tool output without a log prefix",
      "I1201 23:59:59.900000 140 train.py:142] Data emomv/c: train 288",
      "I1202 00:00:01.000000 140 train.py:155] EMVGAN: 888,651 parameters; mesh {'data': 1} over 1 devices",
      "I1202 00:00:05.250000 140 train.py:372] Early stopping at step 100: gallery/map did not improve",
      "I1202 00:00:07.000000 140 plots.py:439] Plots: a.png",
    ]
  )
  got = startup.phases(stderr, start, wall=10.0)
  assert got == pytest.approx({"imports": 1.0, "state": 1.5, "train": 4.25, "results": 3.25})


def test_phases_of_a_run_that_trained_to_its_last_step():
  start = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))
  stderr = "\n".join(
    [
      "I1201 12:00:02.000000 1 main.py:68] JAX process 0 of 1",
      "I1201 12:00:03.000000 1 train.py:155] EMVGAN: 10 parameters; mesh {'data': 8} over 8 devices",
      "I1201 12:00:09.000000 1 train.py:375] Trained to step 40 of 40",
    ]
  )
  assert startup.phases(stderr, start, wall=12.0) == pytest.approx(
    {"imports": 2.0, "state": 1.0, "train": 6.0, "results": 3.0}
  )


def test_the_log_lines_that_end_the_phases_are_the_trainers():
  """The phases are read from the training loop's log lines: rewording one would silently merge two phases."""
  import inspect  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top

  from emvgan_jax import train  # pylint: disable=g-import-not-at-top

  source = inspect.getsource(train)
  for name, pattern in startup._PHASE_ENDS:  # pylint: disable=protected-access
    if pattern is not None:
      for alternative in pattern.split("|"):
        assert re.search(re.escape(alternative), source), (name, alternative)


@pytest.mark.slow
def test_the_search_benchmark_checks_every_side_and_times_the_matmul_floors():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  import helpers  # pylint: disable=g-import-not-at-top

  cmd = [sys.executable, "-m", "benchmarks.search", "--sizes=3000", "--queries=16", "--check_queries=8"]
  cmd += ["--rounds=1", "--sides=index,chunked,numpy", "--floors"]
  out = subprocess.run(
    cmd, cwd=helpers.REPO_ROOT, env=helpers.subprocess_env(), capture_output=True, text=True, check=True, timeout=300
  ).stdout
  for side in ("index", "chunked", "numpy"):
    assert f"  {side} " in out and "ids = float64: True" in out
  assert "matmul alone, XLA / BLAS time:" in out and "(1 chunks of 3,072)" in out
