"""Tests of `emvgan-sweep`: a real 2-seed sweep of the tiny config whose table equals numpy over the
per-seed results, reuse of finished runs without retraining, and the table's pieces on hand-made results."""

import json
import os
import shutil
import types

import helpers
import numpy as np
import pytest
import scipy.stats
from helpers import run_main

from emvgan_jax import config_lib, errors, train
from emvgan_jax.evaluation import peers
from emvgan_jax.evaluation import run as evaluate_lib
from emvgan_jax.experiments import runs as experiments
from emvgan_jax.experiments import sweep
from emvgan_jax.tools import sweep as sweep_tool


@pytest.fixture(scope="module")
def sweep_root(tiny_run, tmp_path_factory):
  """A sweep folder holding the shared tiny run as seed 0 of configs/tiny.py, where the sweep keeps it."""
  root = tmp_path_factory.mktemp("tiny_sweep")
  shutil.copytree(tiny_run.workdir, root / sweep.config_slug(tiny_run.spec) / "seed_0")
  return types.SimpleNamespace(root=root, spec=tiny_run.spec, data_dir=tiny_run.data_dir)


@pytest.fixture(scope="module")
def swept(sweep_root):
  """Seeds 0 and 1 of the tiny config: seed 0 is the finished shared run, so only seed 1 trains here."""
  tiny_run = sweep_root
  calls = []

  def counting_train(config, workdir):
    calls.append((config.seed, workdir))
    return train.train_and_evaluate(config, workdir)

  table = sweep.run_sweep(
    [tiny_run.spec], [0, 1], str(tiny_run.root), data_dir=tiny_run.data_dir, train_fn=counting_train
  )
  return table, calls


@pytest.mark.slow
def test_sweep_table_equals_numpy_over_the_seeds(sweep_root, swept):
  tiny_run = sweep_root
  table, calls = swept
  assert [seed for seed, _ in calls] == [0 + 1]  # seed 0 was finished: reused, not retrained
  on_disk = json.loads((tiny_run.root / "table.json").read_text())
  assert on_disk == json.loads(json.dumps(table))
  per_seed = [json.loads((tiny_run.root / "tiny" / f"seed_{s}" / "results.json").read_text()) for s in (0, 1)]
  (row,) = table["rows"]
  assert row["status"] == ["reused", "trained"] and row["seeds"] == [0, 1]
  for key, path, _ in sweep.METRICS:
    values = np.array([r[path[0]][path[1]][path[2]] if len(path) == 3 else r[path[0]][path[1]] for r in per_seed])
    cell = row["metrics"][key]
    assert cell["mean"] == pytest.approx(np.mean(values))
    assert cell["std"] == pytest.approx(np.std(values, ddof=1))
  chance = table["chance"][0]["metrics"]
  assert chance["video_to_music/map"] == pytest.approx(per_seed[0]["chance"]["retrieval"]["map"])
  assert chance["classification/accuracy"] == 0.5
  md = (tiny_run.root / "table.md").read_text()
  assert "`validation` split" in md and "ddof=1" in md and "wall time" in md
  assert "| chance |" in md and "±" in md and "| EMVGAN | `tiny` |" in md
  assert table["std_ddof"] == 1 and table["wall_seconds"] > 0


@pytest.mark.slow
def test_rerun_reuses_every_finished_run(sweep_root, swept, capsys, monkeypatch):
  del swept  # only its runs
  tiny_run = sweep_root
  results = [tiny_run.root / "tiny" / f"seed_{s}" / "results.json" for s in (0, 1)]
  mtimes = [os.stat(p).st_mtime_ns for p in results]

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was retrained")

  monkeypatch.setattr(train, "train_and_evaluate", no_training)
  # The command line, with several configs in one --configs value separated by ';' (here the same one once).
  code = run_main(
    sweep_tool,
    [f"--configs={tiny_run.spec};", "--seeds=0,1", f"--workdir={tiny_run.root}", f"--data_dir={tiny_run.data_dir}"],
  )
  assert code is None
  assert [os.stat(p).st_mtime_ns for p in results] == mtimes
  out = capsys.readouterr().out
  assert "Sweep wall time" in out and "0 runs trained, 2 reused" in out


@pytest.mark.slow
def test_finished_run_of_another_config_is_not_reused(sweep_root, swept):
  del swept
  tiny_run = sweep_root
  with pytest.raises(errors.Error, match="another config"):
    sweep.run_sweep(
      [tiny_run.spec],
      [0],
      str(tiny_run.root),
      data_dir=tiny_run.data_dir,
      overrides=["train.num_epochs=3"],
      train_fn=None,
    )


# --- the pieces, on hand-made results -------------------------------------------------------------------------


def _results(seed, *, retrieval=True, dataset="emomv/c"):
  rng = np.random.default_rng(seed)
  r = {
    "dataset": dataset,
    "model": "m",
    "description": "Model",
    "seed": seed,
    "classification": {
      "split": "validation",
      "num_pairs": 96,
      **{k: float(rng.random()) for k in ("accuracy", "f1", "roc_auc")},
    },
    "chance": {"classification": {"accuracy": 0.5, "f1": 0.5, "roc_auc": 0.5}},
    "selection": {"split": "validation"},
  }
  if retrieval:
    r["retrieval"] = {
      "split": "gallery",
      "gallery_size": 96,
      **{
        d: {k: float(rng.random()) for k in ("map", "hit@1", "hit@5", "recall@10")}
        for d in ("video_to_music", "music_to_video")
      },
    }
    r["chance"]["retrieval"] = {"map": 0.28, "hit@1": 0.246, "hit@5": 0.734, "recall@10": 10 / 96}
  return r


def test_classification_only_model_has_empty_retrieval_cells():
  runs = [sweep.RunResult("a.py", s, f"w/a/seed_{s}", "trained", _results(s), 1.0) for s in (0, 1, 2)]
  runs += [
    sweep.RunResult("b.py:x,y", s, f"w/b/seed_{s}", "trained", _results(10 + s, retrieval=False), 1.0)
    for s in (0, 1, 2)
  ]
  table = sweep.summarize(runs, seeds=[0, 1, 2], wall_seconds=3.0)
  rows = {r["config"]: r for r in table["rows"]}
  assert rows["b.py:x,y"]["metrics"]["video_to_music/map"] is None
  acc = [runs[i].results["classification"]["accuracy"] for i in (3, 4, 5)]
  assert rows["b.py:x,y"]["metrics"]["classification/accuracy"]["std"] == pytest.approx(np.std(acc, ddof=1))
  assert len(table["chance"]) == 1 and table["chance"][0]["metrics"]["video_to_music/map"] == 0.28
  md_rows = [line for line in sweep.format_markdown(table).splitlines() if line.startswith("| Model |")]
  cells = md_rows[1].split("|")[3:-1]
  assert [c.strip() for c in cells[:8]] == [""] * 8 and "±" in cells[8]


def test_single_seed_has_no_std_and_two_datasets_two_chance_rows():
  runs = [
    sweep.RunResult("a.py", 0, "w", "reused", _results(0), 0.0),
    sweep.RunResult("b.py", 0, "w2", "reused", _results(1, dataset="emomv/b"), 0.0),
  ]
  table = sweep.summarize(runs, seeds=[0], wall_seconds=0.5)
  assert table["rows"][0]["metrics"]["classification/f1"]["std"] is None
  md = sweep.format_markdown(table)
  assert "chance (emomv/c, validation)" in md and "chance (emomv/b, validation)" in md
  assert "±" not in md.split("\n", 1)[1]  # no ± in the table body


def test_config_specs_slugs_and_overrides():
  assert sweep.split_config_specs(["configs/a.py;configs/b.py:c,retrieval_multi", "configs/c.py"]) == [
    "configs/a.py",
    "configs/b.py:c,retrieval_multi",
    "configs/c.py",
  ]
  assert sweep.config_slug("configs/emomv_baseline.py:c,retrieval_multi") == "emomv_baseline-c-retrieval_multi"
  assert sweep.config_slug("configs/emomv_c.py") == "emomv_c"
  assert sweep.config_slug("configs/emomv_c.py" + sweep.ENSEMBLE) == "emomv_c-ensemble"
  code = run_main(sweep_tool, ["--configs=configs/emomv_c.py", "--seeds=0", "--workdir=/tmp/x", "--ensemble"])
  assert code.startswith("error: --ensemble needs two or more --seeds")
  config = sweep.make_config(
    "configs/emomv_baseline.py:c,classification_multi",
    3,
    data_dir="/d",
    overrides=["train.max_steps=7", "optim.learning_rate=0.5", "loss.emotion_positives=false"],
  )
  assert config.seed == 3 and config.data.data_dir == "/d" and config.train.max_steps == 7
  assert config.optim.learning_rate == 0.5 and config.loss.emotion_positives is False
  assert config.baseline.task == "classification" and config.baseline.multitask
  with pytest.raises(config_lib.ConfigError, match="no field 'train.nope'"):
    sweep.make_config("configs/emomv_c.py", 0, overrides=["train.nope=1"])
  with pytest.raises(config_lib.ConfigError, match="does not exist"):
    sweep.make_config("configs/missing.py", 0)


def test_caption_tells_peer_selection_apart_and_alignment_has_its_chance():
  peer = {**_results(0), "model": "peer_logreg", "description": "Peer", "selection": {"split": "train (3 holdouts)"}}
  peer["alignment"] = {"centroid_gap": 0.1, "modality_probe_accuracy": 0.6}
  peer["chance"]["alignment"] = {"modality_probe_accuracy": 0.5}
  runs = [
    sweep.RunResult("a.py", 0, "w0", "trained", _results(0), 1.0),
    sweep.RunResult("peers.py:logreg", 0, "w1", "trained", peer, 1.0),
  ]
  table = sweep.summarize(runs, seeds=[0], wall_seconds=2.0)
  assert "Checkpoints selected on `validation`." in table["caption"]
  assert "Peers' hyper-parameters chosen on `train (3 holdouts)`." in table["caption"]
  md = sweep.format_markdown(table)
  assert "| Peer | `peers-logreg` |" in md and "| 0.100 | 0.600 |" in md
  assert md.rstrip().endswith("| 0.500 |")  # the chance row: a probe that cannot tell the modalities apart


# --- the cross-validation protocol --------------------------------------------------------------------------


def test_corrected_interval_against_hand_worked_values():
  # d = (1, 2, 3, 4): mean 2.5, s^2 = 5/3; 5 folds: n_test/n_train = 1/4; t_{3, 0.975} = 3.182446305284263.
  got = experiments.corrected_interval([1.0, 2.0, 3.0, 4.0], test_train_ratio=0.25)
  half = 3.182446305284263 * np.sqrt((1 / 4 + 1 / 4) * 5 / 3)
  assert got["mean"] == 2.5 and got["n"] == 4
  assert got["low"] == pytest.approx(2.5 - half) and got["high"] == pytest.approx(2.5 + half)
  # Without the correction term it is scipy's one-sample t interval.
  naive = experiments.corrected_interval([1.0, 2.0, 3.0, 4.0], test_train_ratio=0.0)
  low, high = scipy.stats.t.interval(0.95, 3, loc=2.5, scale=scipy.stats.sem([1.0, 2.0, 3.0, 4.0]))
  assert (naive["low"], naive["high"]) == pytest.approx((low, high))
  with pytest.raises(ValueError, match="at least 2"):
    experiments.corrected_interval([1.0], test_train_ratio=0.25)


def test_cv_sweep_trains_every_fold_and_pairs_differences_by_fold(tmp_path):
  """`run_sweep` under the cross-validation protocol, with a fake trainer that records each run's data fields
  and returns metrics that are a function of (config, fold)."""
  seen = []

  def fake_train(config, workdir):
    d = config.data
    seen.append((config.model, d.cv_folds, d.cv_fold, d.cv_repeat, d.selection_fraction, config.seed))
    offset = 0.1 if config.model == "emvgan" else 0.0
    r = _results(10 * d.cv_repeat + d.cv_fold)  # the same draw for both configs on a fold: paired
    r["classification"]["split"] = "cv-fold"
    r["retrieval"]["video_to_music"]["map"] += offset
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort())
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(r, f)
    return r

  protocol = sweep.Protocol("cv", cv_folds=3, cv_repeats=2, selection_fraction=0.25)
  specs = ["configs/emomv_c.py", "configs/emomv_baseline.py:c,retrieval_multi"]
  table = sweep.run_sweep(specs, [0], str(tmp_path), train_fn=fake_train, protocol=protocol)
  assert len(seen) == 2 * 2 * 3
  assert {s[1:5] for s in seen if s[0] == "emvgan"} == {(3, f, r, 0.25) for r in range(2) for f in range(3)}
  assert (tmp_path / "emomv_c" / "cv1_fold2" / "seed_0" / "results.json").is_file()
  (paired,) = table["paired"]["rows"]
  assert table["paired"]["reference"] == specs[0] and paired["config"] == specs[1]
  vm = paired["metrics"]["video_to_music/map"]
  assert vm["mean"] == pytest.approx(0.1) and vm["std"] == pytest.approx(0.0, abs=1e-12) and vm["n"] == 6
  assert paired["metrics"]["music_to_video/map"]["mean"] == pytest.approx(0.0, abs=1e-12)
  md = (tmp_path / "table.md").read_text()
  assert "cross-validation" in md and "2 x 3 folds" in md and "Paired difference of `emomv_c`" in md
  assert "+0.100 [+0.100, +0.100] *" in md
  # Rerun: every (config, repeat, fold) is finished and read back.
  seen.clear()
  sweep.run_sweep(specs, [0], str(tmp_path), train_fn=fake_train, protocol=protocol)
  assert seen == []
  with pytest.raises(errors.Error, match="--reference"):
    sweep.run_sweep(specs, [0], str(tmp_path), train_fn=fake_train, protocol=protocol, reference="x.py")


@pytest.mark.slow
def test_eval_datasets_tables_equal_evaluate_and_the_refitted_peer(sweep_root, swept):
  del swept  # seeds 0 and 1 of the tiny config are trained
  peer = "configs/peers.py:logreg"
  table = sweep.run_sweep(
    [sweep_root.spec, peer], [0], str(sweep_root.root), data_dir=sweep_root.data_dir, eval_datasets=["emomv/b"]
  )
  other = json.loads((sweep_root.root / "table_emomv_b.json").read_text())
  assert other == json.loads(json.dumps(table["elsewhere"]["emomv/b"]))
  assert other["trained_on"] == "emomv/c" and other["caption"].startswith("Trained on emomv/c, evaluated on")
  assert "slightly optimistic" not in other["caption"]  # selected on C's validation, reported on B's
  network, fitted = other["rows"]
  by_hand = evaluate_lib.evaluate_run(network["workdirs"][0], dataset="emomv/b", make_plots=False).results
  assert network["metrics"]["video_to_music/map"]["mean"] == pytest.approx(
    by_hand["retrieval"]["video_to_music"]["map"]
  )
  assert by_hand["dataset"] == "emomv/b" and by_hand["classification"]["split"] == "validation"
  # The refitted peer scored on its own set reproduces its first fit.
  config = sweep.make_config(peer, 0, data_dir=sweep_root.data_dir)
  first = experiments.read_json(os.path.join(fitted["workdirs"][0], "results.json"))
  again = peers.evaluate_on(config, first, "emomv/c")
  for key in ("map", "hit@1"):
    assert again["retrieval"]["video_to_music"][key] == pytest.approx(
      first["retrieval"]["video_to_music"][key], abs=1e-5
    )
  assert again["classification"]["roc_auc"] == pytest.approx(first["classification"]["roc_auc"], abs=1e-5)


@pytest.mark.parametrize(
  "dataset, message", [("emomv_a", "is not one of emomv/a"), ("emomv/c", "is what the configs train on")]
)
def test_eval_datasets_are_checked_before_any_training(tmp_path, dataset, message):
  def never(config, workdir):
    raise AssertionError("trained before the flags were checked")

  spec = str(helpers.REPO_ROOT / "configs" / "tiny.py")
  with pytest.raises(errors.UsageError, match=message):
    sweep.run_sweep([spec], [0], str(tmp_path), train_fn=never, eval_datasets=[dataset])


@pytest.mark.slow
def test_the_ensemble_row_scores_the_seeds_as_one_model(sweep_root, swept, tmp_path):
  """The mean of the two seeds' match probabilities and ranking scores, recomputed from what `evaluate` exports."""
  import sklearn.metrics as skm  # pylint: disable=g-import-not-at-top

  del swept  # only its runs
  table = sweep.run_sweep(
    [sweep_root.spec],
    [0, 1],
    str(sweep_root.root),
    data_dir=sweep_root.data_dir,
    ensemble=True,
    emotion_weight_rows=True,
  )
  assert [r["slug"] for r in table["rows"]] == ["tiny", "tiny-cosine", "tiny-emotion", "tiny-ensemble"]
  row = table["rows"][3]
  assert row["description"] == "EMVGAN (ensemble of 2 seeds)" and row["metrics"]["alignment/centroid_gap"] is None
  sims, probs, cosine_maps = [], [], []
  for seed in (0, 1):
    ev = evaluate_lib.evaluate_run(
      str(sweep_root.root / "tiny" / f"seed_{seed}"), out_dir=str(tmp_path / str(seed)), make_plots=False
    )
    e, w = ev.embeddings, float(ev.embeddings["emotion_weight"])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(e["video"].astype(np.float64)) @ unit(e["music"].astype(np.float64)).T
    sims.append((1 - w) * cos + w * e["video_emotion_probs"].astype(np.float64) @ e["music_emotion_probs"].T)
    aps = [skm.average_precision_score(e["emotion"] == e["emotion"][i], cos[i]) for i in range(len(cos))]
    cosine_maps.append(np.mean(aps))
    probs.append(ev.pair_predictions["score"])
  sim, labels = np.mean(sims, axis=0), e["emotion"]
  v2m = np.mean([skm.average_precision_score(labels == labels[i], sim[i]) for i in range(len(labels))])
  assert row["metrics"]["video_to_music/map"]["mean"] == pytest.approx(v2m, abs=1e-6)
  auc = skm.roc_auc_score(ev.pair_predictions["match"], np.mean(probs, axis=0))
  assert row["metrics"]["classification/roc_auc"]["mean"] == pytest.approx(auc, abs=1e-6)
  assert "seed ensemble row" in table["caption"] and "0 runs trained, 2 reused" in table["caption"]
  # The cosine row: the same two runs ranked by cosine alone, whatever weight they chose.
  assert table["rows"][1]["metrics"]["video_to_music/map"]["mean"] == pytest.approx(np.mean(cosine_maps), abs=1e-6)
  assert table["rows"][1]["metrics"]["classification/roc_auc"] is None


def test_an_ensemble_reference_needs_an_emvgan_config_and_two_seeds(tmp_path):
  spec = "configs/peers.py:logreg"
  with pytest.raises(errors.UsageError, match="only an EMVGAN config trained with two or more --seeds"):
    sweep.run_sweep([spec], [0, 1], str(tmp_path), ensemble=True, reference=spec + sweep.ENSEMBLE)
  with pytest.raises(errors.UsageError, match="only an EMVGAN config trained with two or more --seeds"):
    sweep.run_sweep(
      ["configs/emomv_c.py"], [0], str(tmp_path), ensemble=True, reference="configs/emomv_c.py" + sweep.ENSEMBLE
    )
