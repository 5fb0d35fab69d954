"""The simple peers: each fitted on a learnable synthetic pair split and checked against scikit-learn itself, the
selection of their hyper-parameter, and a full run on the builder's dummy data."""

import json

import helpers
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from emvgan_jax import config_lib
from emvgan_jax.data.splits import Split
from emvgan_jax.evaluation import peers

REPO = helpers.REPO_ROOT


@pytest.fixture(scope="module")
def dummy_data_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("tfds_dummy_peers"))


def synthetic_split(n_videos: int = 40, seed: int = 0) -> Split:
  """Matched pairs of `n_videos` YouTube ids x 2 segments, plus mismatched pairs: the emotion is readable from
  both modalities' features (a class-dependent mean plus noise)."""
  centres = np.random.default_rng(100)  # the same emotion -> feature map for every split
  centres_v, centres_m = centres.normal(size=(5, 12)) * 2, centres.normal(size=(5, 6)) * 2
  rng = np.random.default_rng(seed)
  names, video, music, ve, me, match = [], [], [], [], [], []
  segments = [(f"vid{i:02d}_{j:02d}", int(rng.integers(0, 5))) for i in range(n_videos) for j in range(2)]
  feats = {s: (centres_v[e] + rng.normal(size=12), centres_m[e] + rng.normal(size=6)) for s, e in segments}
  emotion = dict(segments)
  for s, e in segments:
    names.append(s), video.append(feats[s][0]), music.append(feats[s][1]), ve.append(e), me.append(e)
    match.append(1)
  for (a, ea), (b, eb) in zip(segments[::4], segments[2::4]):
    if ea != eb:
      for x, y in ((a, b), (b, a)):
        names.append(f"{x}_PAIR_{y}"), video.append(feats[x][0]), music.append(feats[y][1])
        ve.append(emotion[x]), me.append(emotion[y]), match.append(0)
  return Split(
    name=np.asarray(names, dtype=object),
    video=np.asarray(video, np.float32),
    music=np.asarray(music, np.float32),
    match=np.asarray(match, np.int32),
    video_emotion=np.asarray(ve, np.int32),
    music_emotion=np.asarray(me, np.int32),
  )


def test_logreg_peer_is_two_scikit_learn_classifiers_and_a_dot_product():
  train, test = synthetic_split(seed=0), synthetic_split(n_videos=10, seed=1)
  peer = peers.fit("logreg", train, 0.1)
  video, music = peer.embed(test)
  matched = train.take(train.match == 1)  # here: one row per segment, as the peer fits
  want_v = LogisticRegression(C=0.1, max_iter=2000).fit(matched.video, matched.video_emotion)
  np.testing.assert_allclose(video[:, want_v.classes_], want_v.predict_proba(test.video), rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(peer.similarity(video, music), video @ music.T)
  np.testing.assert_allclose(video.sum(axis=1), 1.0, rtol=1e-6)


def test_knn_peer_transfers_the_neighbours_emotions():
  train, test = synthetic_split(seed=0), synthetic_split(n_videos=10, seed=1)
  video, _ = peers.fit("knn", train, 5).embed(test)
  matched = train.take(train.match == 1)
  want = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(matched.video, matched.video_emotion)
  np.testing.assert_allclose(video[:, want.classes_], want.predict_proba(test.video))
  assert set(np.unique(video * 5)) <= set(range(6))  # shares of 5 neighbours


def test_cca_peer_embeds_both_modalities_in_one_space_and_scores_by_cosine():
  train, test = synthetic_split(seed=0), synthetic_split(n_videos=10, seed=1)
  peer = peers.fit("cca", train, 4)
  video, music = peer.embed(test)
  assert video.shape == (len(test), 4) and music.shape == (len(test), 4)
  sim = peer.similarity(video, music)
  assert np.all(np.abs(sim) <= 1 + 1e-9)
  # The true pairs of matched rows are more similar than random pairs: the space is shared.
  assert np.mean(np.diag(sim)) > np.mean(sim) + 0.1


def test_selection_takes_the_best_held_out_value_and_never_sees_other_splits():
  best, scores = peers.select("logreg", synthetic_split(seed=0), holdouts=2, fraction=0.25)
  assert set(scores) == {str(c) for c in peers.GRIDS["logreg"]}
  assert scores[str(best)] == max(scores.values())
  with pytest.raises(ValueError, match="peer.kind must be one of"):
    peers.fit("svm", synthetic_split(), 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", peers.KINDS)
def test_peer_run_on_dummy_data_writes_a_results_dict_like_training(kind, tmp_path, dummy_data_dir):
  tiny = config_lib.load_config_file(str(REPO / "configs" / "tiny.py"))  # the builder's dummy data
  config = config_lib.load_config_file(str(REPO / "configs" / "peers.py") + f":{kind}")
  config = config_lib.with_data(config, data_dir=dummy_data_dir, manual_dir=tiny.data.manual_dir)
  config.peer.selection_fraction = 0.5
  results = peers.fit_and_evaluate(config, str(tmp_path / kind))
  on_disk = json.loads((tmp_path / kind / "results.json").read_text())
  assert on_disk == json.loads(json.dumps(results))
  assert results["model"] == f"peer_{kind}" and results["classification"]["split"] == "validation"
  assert set(results["retrieval"]["video_to_music"]) == set(results["chance"]["retrieval"])
  assert 0.0 <= results["alignment"]["modality_probe_accuracy"] <= 1.0
  assert results["selection"]["chosen"][peers.GRID_NAMES[kind]] in peers.GRIDS[kind]


def test_retrieval_from_a_similarity_equals_the_cosine_path_on_cosines():
  from emvgan_jax.evaluation import metrics, protocol  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(3)
  video, music, labels = rng.normal(size=(30, 6)), rng.normal(size=(30, 6)), rng.integers(0, 5, 30)
  by_cosine = protocol.retrieval_results(video, music, labels)
  by_similarity = protocol.retrieval_results_from_similarity(metrics.cosine_similarity_np(video, music), labels)
  assert by_similarity == by_cosine
