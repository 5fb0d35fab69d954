"""Tests of evaluation/plots.py: valid PNGs from the entry point, PCA and confusion matrix against scikit-learn."""

import json

import numpy as np
import pytest
from helpers import assert_valid_png
from sklearn import decomposition
from sklearn import metrics as skm

from emvgan_jax.evaluation import metrics, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _gallery(n=41, dim=6, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 5, n)
  centres = rng.standard_normal((5, dim)) * 2
  video = centres[labels] + rng.standard_normal((n, dim))
  music = centres[labels] + rng.standard_normal((n, dim)) + 1.0
  return {"video": video.astype(np.float32), "music": music.astype(np.float32), "emotion": labels}


def _write_metrics(path, steps=12):
  with open(path, "w", encoding="utf-8") as f:
    for s in range(1, steps + 1):
      f.write(
        json.dumps(
          {
            "step": s,
            "train/loss": 3.0 / s,
            "train/loss_adv": 0.69,
            "train/loss_nce": 2.0 / s,
            "train/disc_accuracy": 0.5 + 0.01 * s,
          }
        )
        + "\n"
      )
      if s % 3 == 0:
        f.write(
          json.dumps(
            {
              "step": s,
              "pairs/loss": 2.5 / s,
              "pairs/accuracy": 0.5 + 0.02 * s,
              "pairs/roc_auc": 0.6,
              "gallery/map": 0.3 + 0.01 * s,
            }
          )
          + "\n"
        )
    f.write('{"step": 13, "train/lo')  # a run killed mid-line leaves a truncated last line


@pytest.mark.slow
def test_write_training_plots_writes_every_plot(tmp_path):
  _write_metrics(tmp_path / "metrics.jsonl")
  rng = np.random.default_rng(1)
  pairs = {"score": rng.random(30), "match": rng.integers(0, 2, 30), "threshold": 0.5}
  written = plots.write_training_plots(
    str(tmp_path), embeddings=_gallery(), pair_predictions=pairs, results={"checkpoint_step": 9}, title="test run"
  )
  assert sorted(written) == ["confusion_matrix", "embedding_pca", "precision_recall", "training_curves"]
  for path in written.values():
    assert path.startswith(str(tmp_path / "plots"))
    assert_valid_png(path)


def _figure():
  fig = plots._new_figure(6, 4)
  ax = fig.add_subplot(121)
  ax.plot([0, 1], [0, 1], label="a")
  ax.plot([0, 1], [1, 0], label="b")
  ax.set_xlabel("x")
  plots._legend_below(ax)  # outside the axes: the bounding box must keep it
  fig.add_subplot(122).imshow(np.arange(16.0).reshape(4, 4))
  fig.suptitle("title")
  return fig


def test_a_figure_is_drawn_once_per_file_and_is_the_tight_bounding_box_picture(tmp_path, monkeypatch):
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  old = _figure()  # what every revision before wrote: tight_layout, then a tight bounding box at each save
  old.tight_layout()
  old.savefig(tmp_path / "old.png", format="png", dpi=plots._DPI, bbox_inches="tight")
  draws = []
  draw = Figure.draw
  monkeypatch.setattr(Figure, "draw", lambda self, renderer: draws.append(1) or draw(self, renderer))
  plots._save(_figure(), str(tmp_path / "new.png"))
  assert len(draws) == 1 and not (tmp_path / "new.svg").exists()
  np.testing.assert_array_equal(image.imread(tmp_path / "new.png"), image.imread(tmp_path / "old.png"))
  plots._save(_figure(), str(tmp_path / "new.png"), svg=True)
  assert len(draws) == 3 and (tmp_path / "new.svg").read_bytes().startswith(b"<?xml")
  plots._save(_figure(), str(tmp_path / "new.png"))  # without svg, an earlier twin goes: a page would show it
  assert not (tmp_path / "new.svg").exists()


def test_write_training_plots_with_only_some_inputs(tmp_path):
  # No metrics.jsonl and no embeddings (a classification model evaluated elsewhere): only the confusion matrix.
  pairs = {"score": np.array([0.9, 0.2, 0.7]), "match": np.array([1, 0, 0]), "threshold": 0.5}
  written = plots.write_training_plots(str(tmp_path), pair_predictions=pairs, out_dir=str(tmp_path / "out"))
  assert list(written) == ["confusion_matrix"]
  assert_valid_png(written["confusion_matrix"])
  assert plots.write_training_plots(str(tmp_path)) == {}


def test_emotion_names_are_the_datasets():
  from tfds_emomv.emomv import files  # pylint: disable=g-import-not-at-top

  assert plots.EMOTIONS == files.EMOTIONS  # plots keeps a copy so as not to import TFDS


def test_pca_matches_sklearn_up_to_sign():
  x = _gallery()["video"]
  coords, explained = plots.pca_2d(x)
  pca = decomposition.PCA(n_components=2, svd_solver="full").fit(x)
  ref = pca.transform(x)
  for j in range(2):
    sign = np.sign(coords[:, j] @ ref[:, j])
    np.testing.assert_allclose(coords[:, j] * sign, ref[:, j], atol=1e-5)
  np.testing.assert_allclose(explained, pca.explained_variance_ratio_, rtol=1e-6)


def test_confusion_matrix_matches_sklearn():
  rng = np.random.default_rng(3)
  scores, match = rng.random(50), rng.integers(0, 2, 50)
  scores[:5] = 0.4  # exactly at the threshold: predicted mismatched (strict >, as the metrics)
  got = plots.confusion_matrix(scores, match, 0.4)
  np.testing.assert_array_equal(got, skm.confusion_matrix(match, (scores > 0.4).astype(int), labels=[0, 1]))
  acc = metrics.classification_metrics(scores, match, threshold=0.4)["accuracy"]
  assert np.trace(got) / got.sum() == pytest.approx(acc)


def test_precision_recall_curves_and_chance_precision():
  g = _gallery()
  curves = plots.precision_recall_curves(g["video"], g["music"], g["emotion"])
  both = metrics.summarize_retrieval(g["video"], g["music"], g["emotion"])
  labels = g["emotion"]
  share = np.mean([np.mean(labels == q) for q in labels])  # every class occurs, so every query counts
  for direction in plots.DIRECTIONS:
    c = curves[direction]
    assert c["map"] == pytest.approx(both[direction]["map"])
    assert c["chance"] == pytest.approx(share)
    assert c["recall"].shape == c["precision"].shape == (11,)
    assert np.all(np.diff(c["precision"]) <= 1e-12)  # interpolated precision never rises with recall
  # A query class absent from the gallery is left out of the chance share (as from the curve).
  assert plots.chance_precision(np.array([0, 1, 2]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)
