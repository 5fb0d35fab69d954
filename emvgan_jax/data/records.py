"""Splits of a built features folder (`tfds_emomv/features.py`, dataset `features`): small ones in host memory,
large ones left on disk and read a batch at a time.

A split whose features exceed `config.data.stream_above_mb` (or every split, at 0) becomes a `Split` whose
`video` and `music` are `RecordRows` over an `ArrayRecordSource`: its names and labels are in memory, its
features are read by the rows a batch asks for. With several processes, each process's pipeline asks only for
the rows of its own share of each global batch (`pipeline._batches`), so no process reads another's rows.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Sequence

import grain
import numpy as np

from emvgan_jax.data.splits import DataError, RecordRows, Split, built_by_process_0

READ_RECORDS = 4096  # records fetched per call to the array_record source


class ArrayRecordSource:
  """The rows of one split's shards, each record the row's float32 video values then its music values."""

  def __init__(self, paths: Sequence[str], video_dim: int, music_dim: int):
    self._paths = list(paths)
    self._dims = {"video": video_dim, "music": music_dim}
    self._source = grain.sources.ArrayRecordDataSource(self._paths)

  def __len__(self) -> int:
    return len(self._source)

  def width(self, modality: str) -> int:
    return self._dims[modality]

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(video, music) of records `rows`, as float32 views of one new buffer (read-only for a batch)."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
      return np.zeros((0, self._dims["video"]), np.float32), np.zeros((0, self._dims["music"]), np.float32)
    if len(rows) <= READ_RECORDS:  # a batch: one fetch, and the views of its one buffer
      both = self._fetch(rows)
    else:  # a long read (the statistics' chunks): the records' bytes are never all held at once
      both = np.empty((len(rows), self._dims["video"] + self._dims["music"]), np.float32)
      for start in range(0, len(rows), READ_RECORDS):
        both[start : start + READ_RECORDS] = self._fetch(rows[start : start + READ_RECORDS])
    return both[:, : self._dims["video"]], both[:, self._dims["video"] :]

  def _fetch(self, rows: np.ndarray) -> np.ndarray:
    width = self._dims["video"] + self._dims["music"]
    flat = np.frombuffer(b"".join(self._source.__getitems__(rows.tolist())), np.float32)
    if flat.size != len(rows) * width:  # a record of another length: not of this folder's format
      raise DataError(f"records of {self._paths[0]} and its siblings are not {width} float32 values each")
    return flat.reshape(len(rows), width)


def _split_from(folder: pathlib.Path, info: dict, split: str, stream_above_mb: float) -> Split:
  entry = info["splits"][split]
  with np.load(folder / entry["labels"]["file"]) as npz:
    labels = {key: npz[key] for key in npz.files}
  names = np.asarray([n.decode("utf-8") for n in labels["name"]], dtype=object)
  n, dv, dm = entry["rows"], info["video_dim"], info["music_dim"]
  source = ArrayRecordSource([str(folder / s["file"]) for s in entry["shards"]], dv, dm)
  if len(source) != n or len(names) != n:
    raise DataError(f"{folder}: the {split} split has {len(source)} records and {len(names)} names, expected {n}")
  rows = np.arange(n, dtype=np.int64)
  features_mb = n * (dv + dm) * 4 / 2**20
  if features_mb > stream_above_mb:
    video, music = RecordRows(source, "video", rows), RecordRows(source, "music", rows)
    logging.info("%s: %d rows (%.0f MB of features) read from disk a batch at a time", split, n, features_mb)
  else:  # read once into arrays allocated once, one fetch of records at a time
    video, music = np.empty((n, dv), np.float32), np.empty((n, dm), np.float32)
    for start in range(0, n, READ_RECORDS):
      chunk = slice(start, start + READ_RECORDS)
      video[chunk], music[chunk] = source.read(rows[chunk])
  return Split(
    name=names,
    video=video,
    music=music,
    match=labels["match"].astype(np.int32),
    video_emotion=labels["video_emotion"].astype(np.int32),
    music_emotion=labels["music_emotion"].astype(np.int32),
  )


def load_features(
  manual_dir: str | None,
  *,
  data_dir: str | None,
  layout: str | None,
  stream_above_mb: float,
  need: Sequence[str] | None = None,
) -> dict[str, Split]:
  """The splits of the features of `manual_dir`, built first (by process 0) where they are not yet.

  Args:
    manual_dir: a folder in EmoMV's layout.
    data_dir: where features are built (None: ~/tensorflow_datasets).
    layout: which dataset folder of `manual_dir` ('a', 'b', 'c'; None or '': the only one there).
    stream_above_mb: splits with more MB of features stay on disk.
    need: the splits to read (None: all); their files are checked against their SHA-256.

  Raises:
    DataError: no `manual_dir`, a malformed source (named), or a built folder that is damaged or out of date.
  """
  from tfds_emomv import features  # pylint: disable=g-import-not-at-top
  from tfds_emomv.emomv import files  # pylint: disable=g-import-not-at-top

  if not manual_dir:
    raise DataError("config.data.dataset='features' reads a folder in EmoMV's layout: set --config.data.manual_dir=DIR")
  try:
    root = pathlib.Path(os.path.expanduser(manual_dir)).resolve()
    layout = features.detect_layout(root, layout or None)
    folder = features.build_dir(data_dir, manual_dir, layout)

    def build() -> None:
      if not (folder / features.INFO).is_file():
        logging.info("Building the features of %s into %s (first use)", root, folder)
      features.build_features(manual_dir, data_dir, layout=layout, progress=logging.info)

    built_by_process_0(build, f"the features of {root}")
    info = features.load_info(folder)
    features.check_source(info, folder)
    # The gallery comes with any split asked for, as the TFDS datasets give every split.
    wanted = list(info["splits"]) if need is None else [s for s in info["splits"] if s in need or s == "gallery"]
    for split in wanted:
      features.verify(info, folder, split)
  except files.EmoMVFormatError as e:
    raise DataError(str(e)) from e
  return {split: _split_from(folder, info, split, stream_above_mb) for split in wanted}
