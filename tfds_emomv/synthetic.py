"""Synthetic EmoMV: a folder in EmoMV-C's layout, of any size, with emotion structure a model can learn.

Usage:
  python -m tfds_emomv.synthetic --out_dir=DIR --num_pairs=N [--seed=S] [--validation_fraction=0.2] [--noise=6.0]

Writes `DIR/DS3_EmoMV_C/` exactly as the EmoMV repository lays EmoMV-C out (pair CSVs, SlowFast-width video and
VGGish-width music HDF5 files, the retrieval gallery of the validation segments), so that the `emomv/c` builder
reads it: `python -m tfds_emomv.build --datasets=emomv/c --data_dir=D --manual_dir=DIR`, or training with
`--config.data.manual_dir=DIR --config.data.data_dir=D` (a data_dir of its own: the built dataset is keyed by
name, not by source).

The data: segments `syn<video id>_<segment>` of videos of 4 segments each, each with one of the five emotions.
Every segment's video and music vectors are `relu(centre[emotion] + sigma * N(0, 1))` per modality, with one
fixed N(0, 1) centre per (modality, emotion) and a per-segment Gaussian draw: sigma is `--noise` for music and
`--noise * sqrt(2304 / 128)` for video, so that both modalities carry the emotion about equally well and
neither perfectly (tests/tfds_emomv/test_synthetic.py: at the default, a logistic regression fitted on the train rows of
a 2,000-pair folder reads the validation rows' emotions in each modality above 0.3 and below 0.9; chance 0.2).

Pair rows as in EmoMV: each segment's matched row, and for consecutive segments of different emotions the
mismatched pair `A_PAIR_B` with its swap `B_PAIR_A` (about 1.8 rows per segment). Whole videos go to validation
(`--validation_fraction`), as EmoMV's splits do.

Deterministic: the same flags write the same bytes. Written in blocks of 4,096 segments, each with a generator
seeded by (seed, block), so memory stays bounded at any size and no row depends on the block size of another.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pathlib
import sys
from collections.abc import Sequence

import h5py
import numpy as np
from absl import app, flags

from emvgan_jax import atomic
from tfds_emomv import commands
from tfds_emomv.emomv import files

SEGMENTS_PER_VIDEO = 4
BLOCK = 4096  # segments per generator block (a multiple of SEGMENTS_PER_VIDEO)
ROWS_PER_SEGMENT = 1.8  # one matched row; a pair of neighbours (0.5 per segment) of different emotions (p = 0.8)
# gives 2 mismatched rows

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder to write DS3_EmoMV_C/ into.")
_NUM_PAIRS = flags.DEFINE_integer("num_pairs", None, "About how many pair rows (train + validation).", lower_bound=200)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the centres and of every block.")
_VALIDATION = flags.DEFINE_float("validation_fraction", 0.2, "Share of the videos in validation.")
_NOISE = flags.DEFINE_float("noise", 6.0, "Per-segment noise around the emotion centres (higher: harder).")


def _centres(seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng([seed, 0, 0])
  return rng.normal(size=(5, files.VIDEO_DIM)), rng.normal(size=(5, files.MUSIC_DIM))


def _block(
  seed: int, block: int, count: int, noise: float, centres: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(emotion (count,), video (count, 2304), music (count, 128)) of segments block*BLOCK ... + count."""
  rng = np.random.default_rng([seed, 1, block])
  emotion = rng.integers(0, 5, size=count)
  video_noise = noise * np.sqrt(files.VIDEO_DIM / files.MUSIC_DIM)  # as hard to read as the 128-d music
  video = np.maximum(centres[0][emotion] + video_noise * rng.normal(size=(count, files.VIDEO_DIM)), 0)
  music = np.maximum(centres[1][emotion] + noise * rng.normal(size=(count, files.MUSIC_DIM)), 0)
  return emotion, video.astype(np.float32), music.astype(np.float32)


def _is_validation(video_ids: np.ndarray, seed: int, fraction: float) -> np.ndarray:
  """Whether each video goes to validation: a hash (splitmix64) of (seed, video id), so the same video lands in
  the same split whatever the block size or the order."""
  with np.errstate(over="ignore"):
    x = video_ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
  return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


class _Writer:
  """A split's CSV and its two growing HDF5 datasets."""

  def __init__(self, root: pathlib.Path, paths: files.SplitFiles, gallery: bool = False):
    self.gallery = gallery
    for rel in paths.paths:
      (root / rel).parent.mkdir(parents=True, exist_ok=True)
    self._csv_file = open(root / paths.csv, "w", newline="", encoding="utf-8")
    self.csv = csv.writer(self._csv_file, lineterminator="\n")
    self._h5 = []
    self.video, self.music = [], []
    for rel, key, dim in ((paths.video, "default", files.VIDEO_DIM), (paths.music, "data", files.MUSIC_DIM)):
      f = h5py.File(root / rel, "w", track_order=False)
      self._h5.append(f)
      dataset = f.create_dataset(
        key, shape=(0, dim), maxshape=(None, dim), dtype="f4", chunks=(256, dim), track_times=False
      )
      (self.video if dim == files.VIDEO_DIM else self.music).append(dataset)

  def add(self, rows: Sequence[list], video: np.ndarray, music: np.ndarray) -> None:
    if not len(rows):
      return
    self.csv.writerows(rows)
    for dataset, data in ((self.video[0], video), (self.music[0], music)):
      n = dataset.shape[0]
      dataset.resize(n + len(data), axis=0)
      dataset[n:] = data

  def abort(self) -> None:
    """Closes the files after a failed write (a full disk): HDF5 would otherwise flush them, and fail again, as
    the process exits."""
    for f in (self._csv_file, *self._h5):
      with contextlib.suppress(Exception):
        f.close()

  def close(self) -> int:
    self._csv_file.close()
    n = self.video[0].shape[0]
    for f in self._h5:
      f.close()
    return n


def _pair_rows(
  split: str, names: np.ndarray, emotion: np.ndarray, video: np.ndarray, music: np.ndarray
) -> tuple[list[list], np.ndarray, np.ndarray]:
  """The matched row of every segment, then the mismatched pairs of neighbours of different emotions."""
  rows, v_rows, m_rows = [], [], []
  prefix = f"Dataset3/DS3_{split}_"
  for i, name in enumerate(names):
    e = files.EMOTIONS[emotion[i]].capitalize()
    rows.append([prefix + "match/", name, 1, e, e, int(emotion[i]), int(emotion[i])])
    v_rows.append(i)
    m_rows.append(i)
  for i in range(0, len(names) - 1, 2):
    a, b = i, i + 1
    if emotion[a] == emotion[b]:
      continue
    for v, m in ((a, b), (b, a)):
      ve, me = files.EMOTIONS[emotion[v]].capitalize(), files.EMOTIONS[emotion[m]].capitalize()
      rows.append([prefix + "mismatch/", f"{names[v]}_PAIR_{names[m]}", 0, ve, me, int(emotion[v]), int(emotion[m])])
      v_rows.append(v)
      m_rows.append(m)
  return rows, video[v_rows], music[m_rows]


def write_synthetic(
  out_dir: str, num_pairs: int, *, seed: int = 0, validation_fraction: float = 0.2, noise: float = 6.0
) -> dict[str, int]:
  """Writes the folder; returns the rows per split ({'train': ..., 'validation': ..., 'gallery': ...})."""
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
  root = pathlib.Path(os.path.expanduser(out_dir))
  root.mkdir(parents=True, exist_ok=True)
  # HDF5 crashes the process when a write fails: the space is checked first (the pair rows and about a
  # validation share of the segments for the gallery, each row's CSV line, and the six files' own overhead).
  rows = num_pairs + validation_fraction * _num_segments(num_pairs)
  atomic.reserve(root, rows * ((files.VIDEO_DIM + files.MUSIC_DIM) * 4 + 100) + 6 * atomic.HDF5_OVERHEAD)
  # The layout's one folder appears whole, or not at all (written under a partial name, renamed at the end).
  with atomic.replacing(root / _FOLDER) as staged:
    return _write(pathlib.Path(staged), num_pairs, seed, validation_fraction, noise)


_FOLDER = "DS3_EmoMV_C"  # the first part of every path of the layout


def _num_segments(num_pairs: int) -> int:
  return max(SEGMENTS_PER_VIDEO, int(np.ceil(num_pairs / ROWS_PER_SEGMENT / SEGMENTS_PER_VIDEO)) * 4)


def _write(folder: pathlib.Path, num_pairs: int, seed: int, validation_fraction: float, noise: float) -> dict[str, int]:
  """`write_synthetic` into `folder` (what becomes `out_dir/DS3_EmoMV_C`)."""

  def in_folder(split: str) -> files.SplitFiles:
    paths = files.split_files("c", split)
    return files.SplitFiles(*(str(pathlib.Path(p).relative_to(_FOLDER)) for p in paths.paths), kind=paths.kind)

  writers = {}
  try:
    for split in ("train", "validation", "gallery"):
      writers[split] = _Writer(folder, in_folder(split))
    return _fill(writers, num_pairs, seed, validation_fraction, noise)
  except BaseException:
    for writer in writers.values():
      writer.abort()
    raise


def _fill(
  writers: dict[str, _Writer], num_pairs: int, seed: int, validation_fraction: float, noise: float
) -> dict[str, int]:
  """Writes the rows of every split."""
  centres = _centres(seed)
  num_segments = _num_segments(num_pairs)
  for block, start in enumerate(range(0, num_segments, BLOCK)):
    count = min(BLOCK, num_segments - start)
    emotion, video, music = _block(seed, block, count, noise, centres)
    index = start + np.arange(count)
    video_ids = index // SEGMENTS_PER_VIDEO
    names = np.asarray([f"syn{v:07d}_{s:02d}" for v, s in zip(video_ids, index % SEGMENTS_PER_VIDEO)])
    in_validation = _is_validation(video_ids, seed, validation_fraction)
    for split, take in (("train", ~in_validation), ("validation", in_validation)):
      tag = "train" if split == "train" else "val"
      writers[split].add(*_pair_rows(tag, names[take], emotion[take], video[take], music[take]))
    gallery_rows = [
      ["Dataset3/for_retrieval/DS3_val_for_retrieval/", n, files.EMOTIONS[e].capitalize(), int(e)]
      for n, e in zip(names[in_validation], emotion[in_validation])
    ]
    writers["gallery"].add(gallery_rows, video[in_validation], music[in_validation])
  counts = {split: w.close() for split, w in writers.items()}
  empty = [split for split, n in counts.items() if n == 0]
  if empty:
    raise ValueError(f"no video landed in {empty[0]} with these flags: ask for more pairs or another --seed")
  return counts


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _OUT_DIR.value is None or _NUM_PAIRS.value is None:
    print("error: --out_dir and --num_pairs are required (see --help)", file=sys.stderr)
    sys.exit(2)
  try:
    counts = write_synthetic(
      _OUT_DIR.value, _NUM_PAIRS.value, seed=_SEED.value, validation_fraction=_VALIDATION.value, noise=_NOISE.value
    )
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {_OUT_DIR.value}/DS3_EmoMV_C: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def run() -> None:
  """Entry point (`python -m tfds_emomv.synthetic`, the console script `emomv-synthetic`)."""
  commands.run(main, __doc__)


if __name__ == "__main__":
  run()
