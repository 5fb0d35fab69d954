"""Shared test setup: 8 fake CPU devices, and the location of the real EmoMV files.

XLA_FLAGS must be set before jax is imported anywhere, which is why it lives at the top of conftest.py
(pytest imports it before any test module).
"""

import os

# 8 fake CPU devices, and LLVM's optimisations off (helpers.FAST_COMPILE says why).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests build the same tiny models, and most of the suite's time is compilation. A persistent compilation
# cache under .pytest_cache/d (git-ignored; `pytest --cache-clear` empties it) compiles each program once per
# session and keeps it for the next session: the fast subset's second run on an unchanged tree skips most of
# its compiles. Every program is kept, eager operations included; beyond 2 GB the least recently used go.
# Entries are keyed by the program, the compile options and the jax version, so a stale one is never used.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  _CACHE_DIR = os.path.join(_ROOT, ".pytest_cache", "d", "xla")  # pytest's own cache folder for plugins' files
  os.makedirs(_CACHE_DIR, exist_ok=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(2 << 30))

import pathlib
import warnings

import pytest

from tfds_emomv.emomv import make_dummy_data

# The builder's dummy feature files are written by its script, not committed (only their CSVs are).
make_dummy_data.ensure_dummy_data()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# A test that makes an Orbax save or restore fail leaves TensorStore coroutines behind; Python reports them as it
# collects them, possibly after pytest's own warning filters are gone (the commands silence them the same way,
# cli.silence_leftovers).
warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)


@pytest.fixture(scope="session")
def emomv_dir() -> pathlib.Path:
  """The real EmoMV copy named by $EMOMV_DIR, or skip when the variable is unset.

  When the variable is set but the folder is not a usable copy the test fails: CI sets it, and a wrong
  path there must not turn into a quietly skipped suite.
  """
  value = os.environ.get("EMOMV_DIR")
  if not value:
    pytest.skip("EMOMV_DIR is not set: the real EmoMV files are not available on this machine")
  path = pathlib.Path(value)
  marker = path / "DS3_EmoMV_C" / "annotation" / "DS3_TRAIN_MATCH_MISMATCH_labels.csv"
  if not marker.is_file():
    pytest.fail(f"EMOMV_DIR={value} is set but {marker} does not exist: point it at a copy of the EmoMV repository")
  return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One tiny EMVGAN trained on the dummy data (configs/tiny.py, seed 0) in a workdir of its own, shared by the
  tests of the evaluation tools (evaluate, retrieve, plots, sweep): training it costs ~15 s, so it happens once
  per session. A test that needs it in another tool's folder layout copies it there."""
  import types  # pylint: disable=g-import-not-at-top

  from emvgan_jax import config_lib, train  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS above)

  data_dir = str(tmp_path_factory.mktemp("tiny_tfds"))
  spec = str(REPO_ROOT / "configs" / "tiny.py")
  workdir = tmp_path_factory.mktemp("tiny_run") / "workdir"
  config = config_lib.with_data(config_lib.load_config_file(spec), data_dir=data_dir)
  results = train.train_and_evaluate(config, str(workdir))
  return types.SimpleNamespace(workdir=workdir, data_dir=data_dir, spec=spec, results=results)
