"""Tests of `emvgan-evaluate` (and evaluation/run.py) on tiny trained runs: training's numbers reproduced, embeddings
checked with an independent implementation (numpy cosine + scikit-learn AP), every model family, another dataset's
splits with the training set's standardisation, and one-line errors."""

import json
import pathlib
import shutil
import subprocess
import sys

import helpers
import jax
import numpy as np
import pytest
from helpers import assert_valid_png, run_main
from sklearn import metrics as skm

from emvgan_jax import config_lib, train
from emvgan_jax.data import emomv
from emvgan_jax.data.splits import load_dataset
from emvgan_jax.data.standardize import Standardizer
from emvgan_jax.experiments import sweep
from emvgan_jax.runtime import checkpoint as ckpt_lib
from emvgan_jax.runtime import restore
from emvgan_jax.tools import evaluate, retrieve

REPO = helpers.REPO_ROOT
PLOTS = ("confusion_matrix.png", "embedding_pca.png", "precision_recall.png", "training_curves.png")


def _without(results, *keys):
  return {k: v for k, v in results.items() if k not in keys}


@pytest.fixture(scope="module")
def evaluated(tiny_run):
  code = run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--export_embeddings"])
  assert code is None
  return tiny_run.workdir / "eval" / "emomv_c-best"


@pytest.mark.slow
def test_evaluate_reproduces_training_results(tiny_run, evaluated):
  got = json.loads((evaluated / "results.json").read_text())
  want = json.loads((tiny_run.workdir / "results.json").read_text())
  helpers.assert_results_close(_without(got, "evaluation", "provenance"), _without(want, "train_seconds", "provenance"))
  assert got["evaluation"]["checkpoint"] == "best" and got["evaluation"]["trained_on"] == "emomv/c"
  md = (evaluated / "results.md").read_text()
  assert "| map |" in md and "chance" in md and "Classification on validation" in md
  for name in PLOTS:
    assert_valid_png(evaluated / name)


@pytest.mark.slow
def test_the_pages_name_the_run_relative_to_themselves(tiny_run, evaluated):
  """report.html and results.md may be copied or published: they name no absolute path of this machine."""
  for page in (evaluated / "report.html", evaluated / "results.md"):
    text = page.read_text()
    assert str(tiny_run.workdir) not in text, page
  assert "of the run in `../..`" in (evaluated / "results.md").read_text()


@pytest.mark.slow
def test_exported_embeddings_give_the_same_metrics_independently(evaluated):
  npz = np.load(evaluated / "embeddings.npz")
  emotion = ["emotion_weight", "music_emotion_probs", "video_emotion_probs"]
  assert sorted(npz.files) == sorted(["emotion", "music", "name", "video", *emotion])
  results = json.loads((evaluated / "results.json").read_text())["retrieval"]
  video, music, labels = npz["video"].astype(np.float64), npz["music"].astype(np.float64), npz["emotion"]
  assert len(npz["name"]) == len(labels) == video.shape[0] == music.shape[0] == results["gallery_size"]
  v = video / np.linalg.norm(video, axis=1, keepdims=True)
  m = music / np.linalg.norm(music, axis=1, keepdims=True)
  # Ranked by (1 - w) cosine + w emotion agreement, at the run's weight (docs/models.md, emotion-aware ranking).
  w = float(npz["emotion_weight"])
  assert w == pytest.approx(results["emotion_weight"])
  w = results["emotion_weight"]
  scores = (1 - w) * (v @ m.T) + w * (npz["video_emotion_probs"].astype(np.float64) @ npz["music_emotion_probs"].T)
  for direction, sim in (("video_to_music", scores), ("music_to_video", scores.T)):
    aps = [
      skm.average_precision_score(labels == labels[i], sim[i])
      for i in range(len(labels))
      if (labels == labels[i]).any()
    ]
    assert np.mean(aps) == pytest.approx(results[direction]["map"], abs=1e-6)
    ranks = np.array([1 + np.sum(sim[i] > sim[i, i]) for i in range(len(labels))])  # no exact ties here
    for k in (1, 5, 10):
      assert np.mean(ranks <= k) == pytest.approx(results[direction][f"recall@{k}"])


@pytest.mark.slow
def test_other_dataset_is_standardised_with_the_training_statistics(tiny_run):
  code = run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--dataset=emomv/b", "--export_embeddings", "--noplots"])
  assert code is None
  out = tiny_run.workdir / "eval" / "emomv_b-best"
  results = json.loads((out / "results.json").read_text())
  assert results["dataset"] == "emomv/b" and results["classification"]["split"] == "validation"
  assert results["evaluation"]["trained_on"] == "emomv/c"
  # Recompute B's gallery embeddings by hand: raw features, C's statistics from the checkpoint, the model.
  run = restore.load_run(str(tiny_run.workdir))
  gallery = load_dataset("emomv/b", data_dir=tiny_run.data_dir, manual_dir=run.config.data.manual_dir)["gallery"]
  s = run.standardizer
  video = jax.jit(run.family.embed_video)(run.state, (gallery.video - s.video_mean) / s.video_std)
  npz = np.load(out / "embeddings.npz")
  np.testing.assert_allclose(npz["video"], np.asarray(video), atol=1e-5)
  b_stats = Standardizer.fit(
    load_dataset("emomv/b", data_dir=tiny_run.data_dir, manual_dir=run.config.data.manual_dir)["train"]
  )
  assert not np.allclose(b_stats.video_mean, s.video_mean)  # so the check above could tell them apart


@pytest.mark.slow
def test_other_sets_from_an_incomplete_real_copy_evaluate_on_the_splits_it_has(tiny_run, emomv_dir, tmp_path):
  """The real copy lacks EmoMV-A's train, validation and gallery video features and EmoMV-B's train ones: their
  test (A) and validation + gallery (B) are still evaluated, and the missing parts are said, not guessed."""
  data_dir = str(tmp_path / "tfds")
  flags = [f"--workdir={tiny_run.workdir}", f"--data_dir={data_dir}", f"--manual_dir={emomv_dir}", "--noplots"]
  for dataset, split, pairs, gallery in (("emomv/a", "test", 248, None), ("emomv/b", "validation", 120, 120)):
    out = tmp_path / dataset.replace("/", "_")
    assert run_main(evaluate, [*flags, f"--dataset={dataset}", f"--out_dir={out}"]) is None
    results = json.loads((out / "results.json").read_text())
    assert results["classification"]["split"] == split and results["classification"]["num_pairs"] == pairs
    if gallery:
      assert results["retrieval"]["gallery_size"] == gallery
    else:
      assert "retrieval" not in results and results["evaluation"]["retrieval"].startswith("not computed: emomv/a")
  assert "was built without its train split" in run_main(
    evaluate, [*flags, "--dataset=emomv/b", "--split=train", f"--out_dir={tmp_path / 'x'}"]
  )


@pytest.mark.slow
def test_split_flag_and_output_name(tiny_run):
  code = run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--split=train", "--noplots"])
  assert code is None
  results = json.loads((tiny_run.workdir / "eval" / "emomv_c-best-train" / "results.json").read_text())
  assert results["classification"]["split"] == "train" and results["classification"]["num_pairs"] == 6
  assert emomv.default_split("emomv/a") == "test" and emomv.default_split("emomv/c") == "validation"
  assert emomv.default_split("emomv/c", 0.2) == "train-holdout"


@pytest.mark.slow
def test_train_gallery_is_rebuilt_from_the_training_segments(tiny_run):
  code = run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--gallery=train", "--noplots", "--export_embeddings"])
  assert code is None
  out = tiny_run.workdir / "eval" / "emomv_c-best-train-gallery"
  results = json.loads((out / "results.json").read_text())
  train = load_dataset("emomv/c", data_dir=tiny_run.data_dir, manual_dir=None)["train"]
  # The rows the run trained on: train without the selection holdout of configs/tiny.py's defaults.
  trained_on, _ = emomv.holdout_split(train, fraction=0.2, seed=0)
  want = emomv.gallery_from_pairs(trained_on)
  assert results["retrieval"]["split"] == results["alignment"]["split"] == "train-gallery"
  assert results["retrieval"]["gallery_size"] == len(want)
  assert np.load(out / "embeddings.npz")["name"].tolist() == [str(n) for n in want.name]
  assert results["classification"]["split"] == "validation"  # the pair split is unchanged


@pytest.fixture(scope="module")
def classification_run(tiny_run, tmp_path_factory):
  """A tiny classification-only EmoMV baseline (CBP head): no retrieval space."""
  config = sweep.make_config(
    str(REPO / "configs" / "tiny.py") + ":baseline",
    0,
    data_dir=tiny_run.data_dir,
    overrides=["baseline.task=classification", "train.num_epochs=2"],
  )
  workdir = tmp_path_factory.mktemp("classification")
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.mark.slow
def test_classification_baseline_has_no_retrieval_block(classification_run, capsys):
  code = run_main(evaluate, [f"--workdir={classification_run}", "--export_embeddings"])
  assert code is None
  out = classification_run / "eval" / "emomv_c-best"
  got = json.loads((out / "results.json").read_text())
  want = json.loads((classification_run / "results.json").read_text())
  # Training's results have no retrieval block either, and its threshold is a probability's.
  assert "retrieval" not in want and "retrieval" not in want["chance"] and want["classification"]["threshold"] == 0.5
  assert "retrieval" not in got and "retrieval" not in got["chance"]
  helpers.assert_results_close(_without(got, "evaluation", "provenance"), _without(want, "train_seconds", "provenance"))
  assert not (out / "embeddings.npz").exists()
  assert (out / "confusion_matrix.png").exists() and not (out / "precision_recall.png").exists()
  capsys.readouterr()
  # ... and retrieval with it is a one-line error.
  code = run_main(retrieve, [f"--workdir={classification_run}", "--direction=video_to_music", "--query=x"])
  assert code.startswith("error: ") and "classification model" in code and "\n" not in code


# --- errors ----------------------------------------------------------------------------------------------------


def test_no_checkpoint_is_a_one_line_error(tmp_path):
  code = run_main(evaluate, [f"--workdir={tmp_path}"])
  assert code.startswith("error: No 'best' checkpoint") and "train first" in code and "\n" not in code


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_its_config(tiny_run, tmp_path):
  workdir = tmp_path / "w"
  shutil.copytree(tiny_run.workdir / "checkpoints", workdir / "checkpoints")
  for meta in (workdir / "checkpoints").glob("*/*/meta/metadata"):
    d = json.loads(meta.read_text())
    d["config"]["emvgan"]["hidden"] = 24  # the stored kernels are 16 wide
    meta.write_text(json.dumps(d))
  # Without its checksums (as a run saved before they existed): else the edit is reported as damage (test_faults).
  for record in (workdir / "checkpoints").glob("*.sha256.json"):
    record.unlink()
  # The failed restore leaves TensorStore read coroutines behind; pytest reports them when they are collected,
  # during a later test, so setup.cfg filters exactly those two warnings.
  code = run_main(evaluate, [f"--workdir={workdir}"])
  assert code.startswith("error: ") and "does not fit" in code and "retrain" in code and "\n" not in code


def _replaced_while_read(monkeypatch, times):
  """Makes the next `times` checkpoint reads find their step replaced by the next one, as a run still training
  replaces `latest` (the step's folder renamed to the next step number, between listing and reading)."""
  real = ckpt_lib.Checkpoints.restore_meta
  left = [times]

  def restore_meta(self, kind, step=None):
    if left[0] > 0:
      left[0] -= 1
      now = max(self.all_steps(kind))
      folder = pathlib.Path(self.root) / kind
      (folder / str(now)).rename(folder / str(now + 1))
    return real(self, kind, step)

  monkeypatch.setattr(ckpt_lib.Checkpoints, "restore_meta", restore_meta)


@pytest.mark.slow
def test_a_checkpoint_replaced_while_read_is_read_again_or_named_as_still_training(tiny_run, tmp_path, monkeypatch):
  workdir = tmp_path / "w"
  shutil.copytree(tiny_run.workdir, workdir)
  (workdir / "checkpoints" / "latest.sha256.json").unlink()  # its record names the step it replaced
  _replaced_while_read(monkeypatch, 1)
  run = restore.load_run(str(workdir), "latest")  # the second read finds the newest step
  assert run.step == max(int(p.name) for p in (workdir / "checkpoints" / "latest").iterdir() if p.name.isdigit())
  _replaced_while_read(monkeypatch, 2)
  code = run_main(evaluate, [f"--workdir={workdir}", "--checkpoint=latest"])
  assert code.startswith("error: ") and "still training" in code and "--checkpoint=best" in code, code


@pytest.mark.slow
def test_bad_flags_are_one_line_errors(tiny_run):
  assert "--checkpoint must be" in run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--checkpoint=newest"])
  assert "no pair split 'test'" in run_main(evaluate, [f"--workdir={tiny_run.workdir}", "--split=test"])
  assert run_main(evaluate, ["--nonsense"]).startswith("error: ")


@pytest.mark.slow
def test_command_line_error_has_no_traceback(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "emvgan_jax.tools.evaluate", f"--workdir={tmp_path / 'none'}"],
    capture_output=True,
    text=True,
    cwd=REPO,
    timeout=120,
    check=False,
  )
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: No 'best' checkpoint") and "python -m emvgan_jax.main" in last


def test_runs_saved_before_a_config_field_existed_still_load():
  """A checkpoint's stored config lacking a newer field is laid over today's defaults."""
  config = config_lib.merge_onto_defaults(
    {
      "model": "baseline",
      "baseline": {"task": "classification"},
      "data": {"data_dir": None},
      "train": {"selection_metric": "validation/f1"},
    }
  )
  assert config.model == "baseline" and config.baseline.task == "classification"
  assert config.baseline.published_rng_quirk is False  # absent from the stored config: the default
  assert config.train.selection_metric == "pairs/f1"  # the metric's name before it was renamed
