"""Many runs of one protocol, as the sweep and the tuning do them: train a run or reuse it if finished, and summarise
a metric over runs (mean and sample standard deviation).

A finished run (its `results.json` exists) is reused when its saved config is the same run as the one asked for:
the same values on every field that defines a run (`runtime.workdir.run_signature`), compared on the fields both
configs have, so a field added to the code later does not make old runs different. Fields of another model family, data
locations, logging, plotting and checkpoint cadence do not define a run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
import scipy.stats

from emvgan_jax import errors
from emvgan_jax.runtime import workdir as workdir_lib

# Sample standard deviation everywhere a std over runs is reported.
STD_DDOF = 1
TrainFn = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]


def read_json(path: str) -> dict[str, Any]:
  """A JSON file a run wrote; a damaged one is an `errors.Error` naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.Error(
      f"{path} is damaged ({type(e).__name__}: {e}); delete it (or its run's folder) and run the command again"
    ) from None


def train_or_reuse(
  config: ml_collections.ConfigDict, workdir: str, *, train_fn: TrainFn, on_mismatch: str = "error"
) -> tuple[dict[str, Any], str]:
  """Trains `config` into `workdir`, or reads back the finished run there; returns (results, 'trained'|'reused').

  An unfinished run in `workdir` resumes from its latest checkpoint. A finished run of another config is an
  error (`on_mismatch='error'`: the user's workdir is never overwritten) or is deleted and retrained
  (`on_mismatch='retrain'`: for workdirs named after their config, where a mismatch means the code's defaults
  changed).

  Raises:
    errors.Error: a finished run of another config, with `on_mismatch='error'`.
  """
  results_path = os.path.join(workdir, "results.json")
  config_path = os.path.join(workdir, "config.json")
  if os.path.isfile(results_path):
    diff = workdir_lib.differences(read_json(config_path), config) if os.path.isfile(config_path) else []
    if not diff:
      logging.info("Reusing the finished run %s", workdir)
      return read_json(results_path), "reused"
    if on_mismatch == "error":
      raise errors.Error(
        f"{workdir} holds a finished run of another config ({'; '.join(diff[:5])}); use another "
        "--workdir, or delete that run to retrain it"
      )
    logging.info("Retraining %s: its config differs (%s)", workdir, "; ".join(diff[:5]))
    shutil.rmtree(workdir)
  elif (
    os.path.isfile(config_path) and on_mismatch == "retrain" and workdir_lib.differences(read_json(config_path), config)
  ):
    logging.info("Starting %s over: its unfinished run is of another config", workdir)
    shutil.rmtree(workdir)
  logging.info("Training %s", workdir)
  return train_fn(config, workdir), "trained"


def mean_std(values: Sequence[float]) -> dict[str, Any]:
  """Mean, sample standard deviation (None for a single value), count and the values themselves."""
  arr = np.asarray(values, np.float64)
  return {
    "mean": float(arr.mean()),
    "std": float(arr.std(ddof=STD_DDOF)) if arr.size > STD_DDOF else None,
    "n": int(arr.size),
    "values": [float(v) for v in arr],
  }


def get_path(d: Any, path: Sequence[str]) -> float | None:
  """`d[path[0]][path[1]]...` as a float, or None where the path is missing (or holds None)."""
  for p in path:
    if not isinstance(d, dict) or p not in d:
      return None
    d = d[p]
  return None if d is None else float(d)


__all__ = ["STD_DDOF", "corrected_interval", "get_path", "mean_std", "read_json", "train_or_reuse"]


def corrected_interval(differences: Sequence[float], *, test_train_ratio: float, level: float = 0.95) -> dict[str, Any]:
  """Mean of paired differences over resampled splits with a `level` interval from the corrected resampled t.

  Differences measured on J splits whose training sets overlap are correlated, and the naive t interval, with
  variance s^2 / J, is too narrow. Nadeau and Bengio (2003, Machine Learning 52) replace 1/J by
  1/J + n_test/n_train; for k-fold cross-validation n_test/n_train is 1/(k-1). The interval is
  mean +- t_{J-1, (1+level)/2} * sqrt((1/J + n_test/n_train) * s^2), s the sample std (ddof 1).

  Raises:
    ValueError: fewer than two differences.
  """

  d = np.asarray(differences, np.float64)
  if d.size < 2:
    raise ValueError(f"a paired interval needs at least 2 differences, got {d.size}")
  mean, var = float(d.mean()), float(d.var(ddof=1))
  half = float(scipy.stats.t.ppf(0.5 + level / 2, d.size - 1)) * float(np.sqrt((1.0 / d.size + test_train_ratio) * var))
  return {"mean": mean, "low": mean - half, "high": mean + half, "std": float(np.sqrt(var)), "n": int(d.size)}
