"""`python -m tfds_emomv.synthetic`: a synthetic EmoMV-C folder that the real builder accepts, deterministic,
built in blocks that do not depend on the size asked for, with whole videos on one side, and with emotions a
linear model can read from both modalities but not perfectly."""

import csv
import filecmp
import os
import subprocess
import sys

import h5py
import helpers
import numpy as np
import pytest

from tfds_emomv import synthetic
from tfds_emomv.emomv import files, prepare

REPO = str(helpers.REPO_ROOT)


def _split(root, split):
  paths = files.split_files("c", split)
  rows = list(csv.reader(open(os.path.join(root, paths.csv), encoding="utf-8")))
  with h5py.File(os.path.join(root, paths.video)) as f:
    video = f["default"][()]
  with h5py.File(os.path.join(root, paths.music)) as f:
    music = f["data"][()]
  return rows, video, music


def test_the_same_flags_write_the_same_bytes(tmp_path):
  counts = [synthetic.write_synthetic(str(tmp_path / d), 2000, seed=3) for d in ("a", "b")]
  assert counts[0] == counts[1] and counts[0]["train"] + counts[0]["validation"] >= 1800
  for rel in files.config_files("c"):
    assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
  other = synthetic.write_synthetic(str(tmp_path / "c"), 2000, seed=4)
  assert not filecmp.cmp(tmp_path / "a" / files.config_files("c")[1], tmp_path / "c" / files.config_files("c")[1])
  del other


@pytest.mark.slow
def test_a_larger_folder_starts_with_the_same_segments(tmp_path):
  synthetic.write_synthetic(str(tmp_path / "small"), 8000)  # 4,448 segments: block 0 full, block 1 partial
  synthetic.write_synthetic(str(tmp_path / "large"), 12000)
  small, large = _split(tmp_path / "small", "train"), _split(tmp_path / "large", "train")
  n = 1000  # rows of block 0, written first in both
  assert small[0][:n] == large[0][:n]
  np.testing.assert_array_equal(small[1][:n], large[1][:n])
  np.testing.assert_array_equal(small[2][:n], large[2][:n])


@pytest.mark.slow
def test_the_builder_accepts_it_and_videos_stay_on_one_side(tmp_path):
  synthetic.write_synthetic(str(tmp_path / "syn"), 2000)
  counts = prepare.build_one("emomv/c", str(tmp_path / "tfds"), str(tmp_path / "syn"))  # every check of the builder
  train, validation, gallery = (_split(tmp_path / "syn", s)[0] for s in ("train", "validation", "gallery"))
  assert counts == {"train": len(train), "validation": len(validation), "gallery": len(gallery)}

  def videos(rows):
    return {seg.rsplit("_", 1)[0] for r in rows for seg in r[1].split("_PAIR_")}

  assert not videos(train) & videos(validation)
  assert {r[1] for r in gallery} == {r[1] for r in validation if r[2] == "1"}  # the validation segments
  video, music = _split(tmp_path / "syn", "train")[1:]
  assert video.shape[1] == files.VIDEO_DIM and music.shape[1] == files.MUSIC_DIM and video.min() >= 0


@pytest.mark.slow
def test_emotions_are_learnable_from_both_modalities_but_not_perfectly(tmp_path):
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top

  synthetic.write_synthetic(str(tmp_path), 1000)  # held-out accuracy 0.38 (video), 0.40 (music); chance 0.2
  (rows, video, music), (vrows, vvideo, vmusic) = _split(tmp_path, "train"), _split(tmp_path, "validation")
  for x, column, xv in ((video, 5, vvideo), (music, 6, vmusic)):
    y, yv = [int(r[column]) for r in rows], [int(r[column]) for r in vrows]
    accuracy = LogisticRegression(max_iter=1000).fit(x, y).score(xv, yv)
    assert 0.3 < accuracy < 0.9, (column, accuracy)


def test_bad_flags_are_one_line(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  args = [sys.executable, "-m", "tfds_emomv.synthetic", f"--out_dir={tmp_path}", "--num_pairs=1000"]
  proc = subprocess.run([*args, "--validation_fraction=1.5"], cwd=REPO, env=env, capture_output=True, text=True)
  assert proc.returncode == 2 and proc.stderr.strip() == "error: validation_fraction must be in (0, 1), got 1.5"
