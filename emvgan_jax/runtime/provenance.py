"""Where a result came from, recorded beside it: `results.json`'s and every sweep table's `provenance` block.

What a reader of a paper's number needs to reproduce it: the package version and the git commit it ran from
(and whether the tree had uncommitted changes), the versions of the libraries that compute it, the devices, the
date, and the data it read (the resolved folders, not the config's `null`, and the dataset's version).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

import jax

import emvgan_jax
from emvgan_jax import config_lib
from tfds_emomv import features
from tfds_emomv.emomv import emomv_dataset_builder

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tensorflow-datasets", "grain")
# The version of the data each dataset kind is built to (its TFDS builder's, or the features folder's format).
DATASET_VERSIONS = {"emomv": str(emomv_dataset_builder.Builder.VERSION), "features": features.FORMAT}


def _version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def git_state(folder: str = config_lib.REPO_ROOT) -> dict[str, Any]:
  """{'commit': HEAD, 'dirty': uncommitted changes to tracked files} of the checkout the package runs from;
  None values where it is not a git checkout (an installed wheel) or git is missing."""

  def git(*args: str) -> str | None:
    try:
      out = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
      return None
    return out.stdout.strip()

  if not os.path.exists(os.path.join(folder, ".git")):
    return {"commit": None, "dirty": None}
  commit = git("rev-parse", "HEAD")
  status = git("status", "--porcelain", "--untracked-files=no")
  return {"commit": commit, "dirty": None if status is None else bool(status)}


def collect(*, dataset: str, data_dir: str | None, manual_dir: str | None) -> dict[str, Any]:
  """The provenance of a result computed now, in this process, from `dataset` built in `data_dir` (None: TFDS's
  default) from `manual_dir` (None: downloaded from the published URLs)."""
  devices = jax.devices()
  resolve = lambda p: os.path.abspath(os.path.expanduser(os.path.expandvars(p))) if p else None  # noqa: E731
  return {
    "emvgan_jax": emvgan_jax.__version__,
    **git_state(),
    "python": platform.python_version(),
    "libraries": {name: _version(name) for name in LIBRARIES},
    "devices": {
      "platform": devices[0].platform,
      "kind": devices[0].device_kind,
      "count": jax.device_count(),
      "processes": jax.process_count(),
    },
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "data": {
      "dataset": dataset,
      "version": DATASET_VERSIONS.get(dataset.split("/")[0]),
      "data_dir": resolve(data_dir) or os.path.join(os.path.expanduser("~"), "tensorflow_datasets"),
      "manual_dir": resolve(manual_dir),
    },
  }
