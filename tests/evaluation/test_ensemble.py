"""The seed ensemble (evaluation/ensemble.py); its numbers against a hand computation are in
tests/experiments/test_sweep.py, where a real two-seed sweep provides the runs."""

import types

import pytest

from emvgan_jax import config_lib, errors
from emvgan_jax.evaluation import ensemble
from emvgan_jax.runtime import restore


def test_an_ensemble_of_runs_that_differ_in_more_than_their_seed_is_refused(monkeypatch):
  family = types.SimpleNamespace(has_retrieval=True, score_is_probability=True, description="EMVGAN")
  configs = {"a": config_lib.base_config(), "b": config_lib.base_config(), "c": config_lib.base_config()}
  configs["b"].seed = 7  # only the seed: fine as far as this check goes
  configs["c"].data.cv_fold = 3  # another fold
  monkeypatch.setattr(restore, "load_run", lambda w: types.SimpleNamespace(config=configs[w], family=family))
  with pytest.raises(errors.UsageError, match="c and a differ in more"):
    ensemble.ensemble_results(["a", "b", "c"])
  with pytest.raises(errors.UsageError, match="at least two runs"):
    ensemble.ensemble_results(["a"])
