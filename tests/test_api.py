"""The Python API (`emvgan_jax.load_run`) against the code the tools run: the same embeddings, scores and hits."""

import json
import os
import subprocess
import sys

import helpers
import numpy as np
import pytest

import emvgan_jax
from emvgan_jax.data.splits import Split
from emvgan_jax.evaluation import protocol, retrieval
from emvgan_jax.runtime import restore
from tfds_emomv.emomv import files

pytestmark = pytest.mark.slow  # the shared tiny run trains first (~15 s)

REPO = str(helpers.REPO_ROOT)
DUMMY = os.path.join(REPO, "tfds_emomv", "emomv", "dummy_data")


@pytest.fixture(scope="module")
def api_run(tiny_run):
  return emvgan_jax.load_run(str(tiny_run.workdir))


@pytest.fixture(scope="module")
def raw_gallery():
  return files.read_split(DUMMY, "c", "gallery", video_dim=None, music_dim=None)


def test_embeddings_and_scores_equal_the_evaluation_path(api_run, raw_gallery):
  run = api_run.run
  split = run.standardizer.apply(Split.from_arrays(raw_gallery))
  evaluator = protocol.Evaluator(run.family, run.mesh, batch_size=16)
  want = protocol.gallery_embeddings(evaluator, run.state, split)
  np.testing.assert_allclose(api_run.embed_video(raw_gallery["video"]), want["video"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(api_run.embed_music(raw_gallery["music"]), want["music"], rtol=1e-5, atol=1e-6)
  p = api_run.match_probability(raw_gallery["video"], raw_gallery["music"])
  np.testing.assert_allclose(p, evaluator.predict(run.state, split)["score"], rtol=1e-5, atol=1e-6)
  assert np.all((p > 0) & (p < 1))


def test_search_equals_the_retrieve_tool(api_run, raw_gallery, tiny_run):
  run = restore.load_run(str(tiny_run.workdir))
  gallery = retrieval.Gallery(
    name=raw_gallery["name"],
    video=raw_gallery["video"],
    music=raw_gallery["music"],
    emotion=raw_gallery["video_emotion"],
    source="dummy gallery",
  )
  hits, _ = retrieval.retrieve(run, gallery, "video_to_music", query_features=raw_gallery["video"][:2], k=3)
  scores, indices = api_run.search(raw_gallery["video"][:2], raw_gallery["music"], k=3)
  assert indices.tolist() == [[h.index for h in row] for row in hits]
  np.testing.assert_allclose(scores, [[h.score for h in row] for row in hits], rtol=1e-6)
  with pytest.raises(ValueError, match=r"emotion_weight must be in \[0, 1\]"):
    api_run.search(raw_gallery["video"][:2], raw_gallery["music"], k=3, emotion_weight=1.5)
  back_scores, _ = api_run.search(raw_gallery["music"][:1], raw_gallery["video"], k=2, direction="music_to_video")
  assert back_scores.shape == (1, 2)
  # The run's emotion weight is the one its results.json records, and a search may ask for another.
  assert (
    api_run.emotion_weight == json.loads((tiny_run.workdir / "results.json").read_text())["retrieval"]["emotion_weight"]
  )
  hits, _ = retrieval.retrieve(
    run, gallery, "video_to_music", query_features=raw_gallery["video"][:2], k=3, emotion_weight=0.7
  )
  scores, indices = api_run.search(raw_gallery["video"][:2], raw_gallery["music"], k=3, emotion_weight=0.7)
  assert indices.tolist() == [[h.index for h in row] for row in hits]
  np.testing.assert_allclose(scores, [[h.score for h in row] for row in hits], rtol=1e-6)


def test_inputs_it_cannot_read_are_refused(api_run, raw_gallery):
  with pytest.raises(ValueError, match=r"features are 2304 wide .*width 128 is this run's music width"):
    api_run.embed_video(raw_gallery["music"])
  bad = raw_gallery["video"].copy()
  bad[1, 0] = np.nan
  with pytest.raises(ValueError, match=r"NaN or infinite values in 1 row\(s\), first row 1"):
    api_run.embed_video(bad)
  with pytest.raises(ValueError, match="one music row per video row"):
    api_run.match_probability(raw_gallery["video"][:2], raw_gallery["music"][:3])
  with pytest.raises(ValueError, match="direction must be"):
    api_run.search(raw_gallery["video"][:1], raw_gallery["music"], direction="sideways")


def test_the_example_script_runs(tiny_run, raw_gallery):
  env = helpers.subprocess_env()
  proc = subprocess.run(
    [sys.executable, os.path.join(REPO, "examples", "api_quickstart.py"), str(tiny_run.workdir), DUMMY],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=180,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  assert lines[0].startswith("EMVGAN: music for the video of ") and sum(ln.startswith("  ") for ln in lines) == min(
    5, len(raw_gallery["name"])
  )
  assert "match probability" in proc.stdout
