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
from collections.abc import Callable, Sequence

import grain
import numpy as np

from emvgan_jax.data import offsets
from emvgan_jax.data.splits import DataError, RecordRows, Split, aligned_empty, built_by_process_0
from tfds_emomv import features
from tfds_emomv.emomv import files

READ_RECORDS = 4096  # records fetched per call to the array_record source
BLOCK_RECORDS = 256  # records split and transformed at a time (2.5 MB at EmoMV-C's widths: in cache)
Transform = Callable[..., np.ndarray]  # f(x, out=): writes the transformed rows into `out`


class ArrayRecordSource:
  """The rows of one split's shards, each record the row's float32 video values then its music values.

  Where every shard has the layout `emomv-features` writes (one uncompressed record per chunk), rows are read by
  their byte offsets (`offsets.OffsetReader`: one `preadv` per row into a staging block, each row's chunk checked);
  otherwise, or with `by_offset=False`, through array_record's reader. Both give the same rows.
  """

  def __init__(self, paths: Sequence[str], video_dim: int, music_dim: int, *, by_offset: bool = True):
    self._paths = list(paths)
    self._dims = {"video": video_dim, "music": music_dim}
    self._source = grain.sources.ArrayRecordDataSource(self._paths)
    self._by_offset = None
    if by_offset:
      layouts = [offsets.layout(p, 4 * (video_dim + music_dim)) for p in self._paths]
      self._by_offset = offsets.OffsetReader(layouts) if all(layouts) else None
    if self._by_offset is not None and len(self._by_offset) != len(self._source):
      raise DataError(
        f"{self._paths[0]} and its siblings: their footers list {len(self._by_offset)} records, "
        f"array_record reads {len(self._source)}; rebuild the features folder"
      )

  @property
  def paths(self) -> list[str]:
    return list(self._paths)

  @property
  def by_offset(self) -> bool:
    """Whether rows are read by their byte offsets (else through array_record's reader)."""
    return self._by_offset is not None

  def __len__(self) -> int:
    return len(self._source)

  def width(self, modality: str) -> int:
    return self._dims[modality]

  def read(
    self,
    rows: np.ndarray,
    transforms: tuple[Transform | None, Transform | None] = (None, None),
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
  ) -> tuple[np.ndarray, np.ndarray]:
    """(video, music) of records `rows` as float32 arrays (new ones, or `out`), each modality passed through its
    transform, a function `f(x, out=)` that writes into `out` (None: the stored values).

    The records of a fetch are joined, split and transformed `BLOCK_RECORDS` at a time, while the block's bytes
    are in cache: a row's bytes are copied once into its arrays, with no joined copy of the whole batch.
    """
    rows = np.asarray(rows, np.int64)
    dv, dm = self._dims["video"], self._dims["music"]
    if out is None:
      out = (aligned_empty((len(rows), dv)), aligned_empty((len(rows), dm)))
    if len(rows) and (rows.min() < 0 or rows.max() >= len(self._source)):
      raise IndexError(f"records {int(rows.min())} to {int(rows.max())} asked of a split of {len(self._source)}")
    if self._by_offset is not None:
      stage = self._by_offset.staging(min(BLOCK_RECORDS, len(rows)))
      for first in range(0, len(rows), BLOCK_RECORDS):
        at = slice(first, min(len(rows), first + BLOCK_RECORDS))
        raw = self._by_offset.read_into(rows[at], stage)
        self._store(raw.view(np.float32), out, at, transforms)
      return out
    for start in range(0, len(rows), READ_RECORDS):
      records = self._source.__getitems__(rows[start : start + READ_RECORDS].tolist())
      for first in range(0, len(records), BLOCK_RECORDS):
        block = self._block(records[first : first + BLOCK_RECORDS])
        self._store(block, out, slice(start + first, start + first + len(block)), transforms)
    return out

  def _store(self, block: np.ndarray, out: tuple[np.ndarray, np.ndarray], at: slice, transforms: tuple) -> None:
    """A block of rows split into its modalities and written, each through its transform, into `out[.][at]`."""
    dv = self._dims["video"]
    for array, part, transform in zip(out, (block[:, :dv], block[:, dv:]), transforms):
      if transform is None:
        array[at] = part
        continue
      dst = array[at]
      written = transform(part, out=dst)
      if written is not dst and not np.may_share_memory(written, dst):
        dst[...] = written  # a transform that returned new rows instead of writing into `out`

  def _block(self, records: list[bytes]) -> np.ndarray:
    width = self._dims["video"] + self._dims["music"]
    flat = np.frombuffer(b"".join(records), np.float32)
    if flat.size != len(records) * width:  # a record of another length: not of this folder's format
      raise DataError(f"records of {self._paths[0]} and its siblings are not {width} float32 values each")
    return flat.reshape(len(records), width)


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
    video, music = source.read(rows)
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
