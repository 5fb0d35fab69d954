"""Shared test setup: 8 fake CPU devices, and the location of the real EmoMV files.

XLA_FLAGS must be set before jax is imported anywhere, which is why it lives at the top of conftest.py
(pytest imports it before any test module).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
