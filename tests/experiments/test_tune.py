"""The tuning script's pieces: candidate parsing, run configs, and the summary (sample std, paired differences)."""

import numpy as np
import pytest
from helpers import run_main

from emvgan_jax import config_lib, errors
from emvgan_jax.experiments import tune
from emvgan_jax.tools import tune as tune_tool


def test_candidate_values_take_their_fields_types():
  name, overrides = tune_tool.parse_candidate("h128:emvgan.hidden=128,optim.learning_rate=3e-4,loss.adv_mode=confusion")
  assert name == "h128"
  config = tune.make_config("emvgan", overrides, holdout_seed=2, seed=1, holdout_fraction=0.2)
  assert config.emvgan.hidden == 128 and isinstance(config.emvgan.hidden, int)
  assert config.optim.learning_rate == pytest.approx(3e-4) and config.loss.adv_mode == "confusion"
  assert (config.data.holdout_seed, config.seed, config.data.holdout_fraction) == (2, 1, 0.2)
  baseline = tune.make_config(
    "retrieval_multi", {"optim.learning_rate": 1}, holdout_seed=0, seed=0, holdout_fraction=0.2
  )
  assert baseline.model == "baseline" and baseline.baseline.multitask and baseline.optim.learning_rate == 1.0
  assert isinstance(baseline.optim.learning_rate, float)
  with pytest.raises(config_lib.ConfigError, match="no field 'emvgan.width'"):
    tune.make_config("emvgan", {"emvgan.width": "3"}, holdout_seed=0, seed=0, holdout_fraction=0.2)
  with pytest.raises(errors.Error, match="must be key=value"):
    tune_tool.parse_candidate("bad:emvgan.hidden")


def _results(value, step=10):
  return {
    "retrieval": {"video_to_music": {"map": value, "hit@1": value}, "music_to_video": {"map": value, "hit@1": value}},
    "classification": {"roc_auc": value},
    "checkpoint_step": step,
    "total_steps": 2 * step,
    "train_seconds": 1.0,
  }


def test_summary_uses_the_sample_std_and_pairs_runs_by_holdout_and_seed():
  values = [0.40, 0.45, 0.47]
  runs = {(h, 0): _results(v) for h, v in enumerate(values)}
  row = tune.summarize(runs)
  assert row["v->m mAP"] == pytest.approx(np.mean(values))
  assert row["v->m mAP std"] == pytest.approx(np.std(values, ddof=1))
  base = tune.summarize({(h, 0): _results(v - 0.1) for h, v in enumerate(values)})
  table = tune.format_tables({"baseline retrieval_multi": base, "candidate": row}, "header")
  # Every run wins by exactly 0.1: the paired difference is +0.100 with standard error 0.
  assert "| candidate | +0.100 +- 0.000 [1.00]" in table and "| +0.100 |" in table
  alone = tune.format_tables({"candidate": row}, "header")  # --baselines=: no paired table, no error
  assert "| candidate | 0." in alone and "no paired differences" in alone


def test_an_ensemble_needs_two_seeds():
  code = run_main(tune_tool, ["--workdir=/tmp/x", "--seeds=0", "--ensemble"])
  assert code.startswith("error: --ensemble needs two or more --seeds")
