"""A split (`Split`), and reading one from the TFDS builder (`load_dataset`).

Data flows one way: the TFDS builder (`tfds_emomv`) writes array_record files; `load_dataset` reads each split
once through `tfds.data_source` into host memory (EmoMV's largest split, A/train, is 4,110 x 2,432 float32 =
40 MB). The grain pipeline (`pipeline.py`) then batches indices into that cache. A split of the `features`
dataset that is too large for memory keeps its features on disk: its `video` and `music` are `RecordRows`,
which `Split.take` maps without reading and `Split.features` reads a batch of rows at a time (`records.py`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.experimental import multihost_utils

from emvgan_jax import atomic, errors
from emvgan_jax.data import digest

# Keys of a batch that go to the device. `name` stays on the host.
ARRAY_KEYS = ("video", "music", "match", "video_emotion", "music_emotion")
_INT_KEYS = ("match", "video_emotion", "music_emotion")


# Host buffers aligned to this many bytes are taken by JAX's CPU client as they are, without a copy (README,
# Benchmarks: the loader handing batches to the device, before and after).
HOST_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
  """An uninitialised array whose data starts on a `HOST_ALIGNMENT`-byte boundary (numpy's own large arrays
  start 16 bytes past one), so that `make_global_batch` hands it to a CPU device without copying it. The
  pipeline's batches are never written after that, as an aliased buffer must not be."""
  dtype = np.dtype(dtype)
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  raw = np.empty(nbytes + HOST_ALIGNMENT, np.uint8)
  skip = -raw.ctypes.data % HOST_ALIGNMENT
  return raw[skip : skip + nbytes].view(dtype).reshape(shape)


class DataError(errors.Error, ValueError):
  """The data asked for does not exist (a split the dataset lacks), cannot be read, or does not fit the model; the
  message says what to do."""


@dataclasses.dataclass(frozen=True)
class Split:
  """One split held in host memory; row i of every array is example i of the split."""

  name: np.ndarray  # (n,) str
  video: np.ndarray  # (n, dv) float32
  music: np.ndarray  # (n, dm) float32
  match: np.ndarray  # (n,) int32, 1 = matched
  video_emotion: np.ndarray  # (n,) int32 in [0, 5)
  music_emotion: np.ndarray  # (n,) int32 in [0, 5)

  def __post_init__(self):
    n = len(self.name)
    for key in ARRAY_KEYS:
      if len(getattr(self, key)) != n:
        raise ValueError(f"Split field {key!r} has {len(getattr(self, key))} rows, expected {n} (one per name)")

  def __len__(self) -> int:
    return len(self.name)

  @property
  def video_dim(self) -> int:
    return int(self.video.shape[1])

  @property
  def music_dim(self) -> int:
    return int(self.music.shape[1])

  @property
  def on_disk(self) -> bool:
    """Whether the features stay on disk (`RecordRows`) and are read a batch at a time."""
    return isinstance(self.video, RecordRows) or isinstance(self.music, RecordRows)

  def take(self, rows: np.ndarray) -> Split:
    """The split restricted to `rows` (indices or a boolean mask), in that order (on disk: no row is read)."""
    fields = {f.name: take_rows(getattr(self, f.name), rows) for f in dataclasses.fields(self)}
    if isinstance(self.video, RecordRows) and self.video.rows is getattr(self.music, "rows", None):
      fields["music"] = dataclasses.replace(self.music, rows=fields["video"].rows)  # still one read per batch
    return Split(**fields)

  def features(self, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
    """(video, music) of `rows` as float32 arrays; a split on disk reads each record once for both."""
    v, m = self.video, self.music
    if isinstance(v, RecordRows) and isinstance(m, RecordRows) and v.source is m.source and v.rows is m.rows:
      return v.source.read(v.rows[rows], (v.transform, m.transform))
    return _gather(v, rows), _gather(m, rows)

  @classmethod
  def concat(cls, splits: list[Split]) -> Split:
    """The rows of `splits`, one after another.

    Raises:
      ValueError: two splits share a pair name, or their features have different widths.
    """
    if any(s.on_disk for s in splits):
      raise ValueError("splits whose features stay on disk cannot be pooled: raise config.data.stream_above_mb")
    names = np.concatenate([s.name for s in splits])
    unique, counts = np.unique(names.astype(str), return_counts=True)
    if np.any(counts > 1):
      raise ValueError(f"the splits share pair names, e.g. {unique[counts > 1][:3].tolist()}")
    if len({(s.video_dim, s.music_dim) for s in splits}) > 1:
      raise ValueError(f"splits of different feature widths: {[(s.video_dim, s.music_dim) for s in splits]}")
    return cls(**{f.name: np.concatenate([getattr(s, f.name) for s in splits]) for f in dataclasses.fields(cls)})

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, Any]) -> Split:
    """Builds a split from a dict of arrays (as `tfds_emomv.emomv.files.read_pairs` returns)."""
    return cls(
      name=np.asarray([_to_str(x) for x in arrays["name"]], dtype=object),
      video=np.ascontiguousarray(arrays["video"], dtype=np.float32),
      music=np.ascontiguousarray(arrays["music"], dtype=np.float32),
      **{k: np.asarray(arrays[k], dtype=np.int32) for k in _INT_KEYS},
    )


class RowSource(Protocol):
  """Where the rows of a split on disk come from (`emvgan_jax/data/records.py`)."""

  def __len__(self) -> int: ...

  def width(self, modality: str) -> int: ...

  def read(
    self, rows: np.ndarray, transforms: tuple[Callable[..., np.ndarray] | None, Callable[..., np.ndarray] | None]
  ) -> tuple[np.ndarray, np.ndarray]:
    """(video, music) of records `rows`, new float32 arrays, each through its transform `f(x, out=)` (or None)."""


@dataclasses.dataclass(frozen=True, eq=False)
class RecordRows:
  """A feature column whose rows stay on disk: row i is record `rows[i]` of `source`.

  Indexing reads those records (`Split.features` reads both modalities at once) and applies `transform` (the
  standardisation, set by `Standardizer.apply`); `take` only maps indices. So a split of any size costs its
  row map (8 bytes a row) and its labels in memory, and a batch costs its own rows.
  """

  source: RowSource
  modality: str
  rows: np.ndarray  # (n,) int64 record indices
  transform: Callable[..., np.ndarray] | None = None  # f(x, out=), writing the transformed rows into `out`

  @property
  def shape(self) -> tuple[int, int]:
    return (len(self.rows), self.source.width(self.modality))

  dtype = np.dtype(np.float32)
  ndim = 2

  def __len__(self) -> int:
    return len(self.rows)

  def take(self, rows: np.ndarray) -> RecordRows:
    return dataclasses.replace(self, rows=self.rows[rows])

  def __getitem__(self, rows: np.ndarray | slice) -> np.ndarray:
    video = self.modality == "video"
    transforms = (self.transform, None) if video else (None, self.transform)
    return self.source.read(self.rows[rows], transforms)[0 if video else 1]


def _gather(column: Any, rows: np.ndarray | slice) -> np.ndarray:
  """Rows of an in-memory feature column, gathered into an aligned array (a slice stays a view)."""
  if isinstance(column, np.ndarray) and column.ndim == 2 and not isinstance(rows, slice):
    rows = np.asarray(rows)
    if rows.ndim == 1 and rows.dtype.kind in "iu" and (not len(rows) or (rows.min() >= 0 and rows.max() < len(column))):
      # mode='clip' is unbuffered (the default mode copies through a temporary); the bounds are checked above.
      out = aligned_empty((len(rows), column.shape[1]), column.dtype)
      return np.take(column, rows, axis=0, out=out, mode="clip")
  return np.asarray(column[rows])


def take_rows(column: Any, rows: np.ndarray) -> Any:
  """Rows `rows` of a field of a `Split` (an array, or `RecordRows`, which maps them without reading)."""
  return column.take(rows) if isinstance(column, RecordRows) else column[rows]


def _to_str(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def prepare_dataset(dataset: str, *, data_dir: str | None, manual_dir: str | None = None, partial: bool = False) -> Any:
  """Returns the TFDS builder of `dataset` (e.g. 'emomv/c'), building it into `data_dir` on first use.

  Args:
    dataset: TFDS name with config, `emomv/a`, `emomv/b` or `emomv/c`.
    data_dir: the TFDS data dir (None: TFDS's default, ~/tensorflow_datasets).
    manual_dir: a local copy of the EmoMV repository; None downloads the files from their public URLs.
    partial: a first build from `manual_dir` skips the splits whose files are missing there (recorded in the
      built dataset: `load_dataset` names them when a caller needs one).

  Raises:
    tfds_emomv.emomv.EmoMVFormatError: a source file is missing (named, with its URL) or malformed.
  """

  import tensorflow_datasets as tfds  # deferred: TFDS, only when a dataset is built or read

  from tfds_emomv.emomv import prepare  # deferred: TFDS, only when a dataset is built or read

  # '~/...' and '$VAR' from a flag or a config field, as everywhere (tools/cli.expand_paths).
  data_dir = os.path.expanduser(os.path.expandvars(data_dir)) if data_dir else data_dir
  manual_dir = os.path.expanduser(os.path.expandvars(manual_dir)) if manual_dir else manual_dir

  builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():

    def build() -> None:
      logging.info("Building %s into %s (first use)", dataset, builder.data_dir)
      prepare.build_one(dataset, data_dir, manual_dir, partial=partial)

    built_by_process_0(build, f"{dataset} in {builder.data_dir}")
    builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
  return builder


def built_by_process_0(build: Callable[[], None], what: str) -> None:
  """Runs `build` on process 0 while the other processes wait; if it fails there, every process fails.

  Raises:
    The error of `build` on process 0; `DataError` on the others (process 0's own message says why).
  """
  error = None
  if jax.process_index() == 0:
    try:
      build()
    except Exception as e:  # pylint: disable=broad-except  (re-raised below, after the others have heard)
      error = e
  if jax.process_count() > 1:  # the others wait, then read what process 0 wrote
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not ok and error is None:
      raise DataError(f"process 0 could not build {what}: its error message says why")
  if error is not None:
    raise error


def load_dataset(
  dataset: str,
  *,
  data_dir: str | None,
  manual_dir: str | None = None,
  partial: bool = False,
  need: Sequence[str] | None = None,
) -> dict[str, Split]:
  """Reads every built split of `dataset` into host memory (building it first if needed).

  Args:
    dataset: `emomv/a`, `emomv/b` or `emomv/c`.
    data_dir: the TFDS data dir.
    manual_dir: the EmoMV copy to build from (None: download).
    partial: a first build skips the splits whose files `manual_dir` lacks (see `prepare_dataset`).
    need: the splits the caller cannot do without (None: every split of the dataset).

  Raises:
    DataError: a needed split was skipped by a partial build (naming the files it lacked), or the built files
      are damaged.
  """
  from tfds_emomv.emomv import files, prepare  # deferred: TFDS, only when a dataset is built or read

  builder = prepare_dataset(dataset, data_dir=data_dir, manual_dir=manual_dir, partial=partial)
  verify_built(str(builder.data_dir), dataset)
  skipped = prepare.skipped_splits(builder)
  wanted = files.splits(dataset.partition("/")[2]) if need is None else need
  absent = [split for split in wanted if split in skipped]
  if absent:
    lacking = sorted({rel for split in absent for rel in skipped[split]})
    raise DataError(
      f"{dataset} in {builder.data_dir} was built without its {' and '.join(absent)} split (a partial build: "
      f"{', '.join(lacking)} missing); put the file(s) in the EmoMV copy and rebuild it with `python -m "
      f"tfds_emomv.build --datasets={dataset} --data_dir=... --manual_dir=... --overwrite`"
    )
  for split, rels in skipped.items():
    logging.warning("%s has no %s split (a partial build: %s missing)", dataset, split, ", ".join(rels))
  try:
    sources = builder.as_data_source()
    return {split: _read_source(source) for split, source in sources.items()}
  except Exception as e:  # pylint: disable=broad-except  (array_record and TFDS raise many kinds)
    raise DataError(
      f"the built dataset {dataset} in {builder.data_dir} cannot be read ({type(e).__name__}: {e}); delete that "
      "folder to rebuild it from the EmoMV files"
    ) from e


BUILT_CHECKSUMS = "emvgan_jax.sha256.json"


def verify_built(folder: str, dataset: str) -> None:
  """Checks a built dataset's record files against the SHA-256 recorded at its first use (recorded now if absent).

  array_record files carry no checksum of their own: a damaged byte would otherwise load as a wrong value.

  Raises:
    DataError: a record file differs from (or is missing since) its first use, naming it.
  """

  def digests() -> dict[str, str]:
    names = sorted(n for n in os.listdir(folder) if ".array_record" in n)
    return {name: digest.file_sha256(os.path.join(folder, name)) for name in names}

  path = os.path.join(folder, BUILT_CHECKSUMS)
  now = digests()
  if not os.path.exists(path):
    if jax.process_index() == 0:
      atomic.write_json(path, now, indent=1)
    return
  with open(path, encoding="utf-8") as f:
    recorded = json.load(f)
  for name, want in recorded.items():
    if now.get(name) != want:
      state = "is missing" if name not in now else "is damaged (it differs from the file first read)"
      raise DataError(
        f"{os.path.join(folder, name)} {state}: the built dataset {dataset} cannot be trusted; delete {folder} to "
        "rebuild it from the EmoMV files"
      )


READ_CHUNK = 8192  # records decoded at a time: the decoded records never hold more than this many rows


def _read_source(source: Any) -> Split:
  """Every record of a TFDS data source, decoded a chunk at a time into arrays allocated once (the features are
  never held twice, as decoded records and as their stacked copy)."""
  n = len(source)
  if not n:
    raise ValueError("empty split")
  first = source.__getitems__([0])[0]
  arrays = {key: np.empty((n, *np.shape(first[key])), np.asarray(first[key]).dtype) for key in ARRAY_KEYS}
  names = []
  for start in range(0, n, READ_CHUNK):
    records = source.__getitems__(list(range(start, min(n, start + READ_CHUNK))))
    for key in ARRAY_KEYS:
      stacked = np.stack([r[key] for r in records])
      if stacked.shape[1:] != arrays[key].shape[1:]:  # a shape that would merely broadcast is still wrong
        raise ValueError(
          f"record {start}+ has {key} of shape {stacked.shape[1:]}, the first had {arrays[key].shape[1:]}"
        )
      arrays[key][start : start + len(records)] = stacked
    names += [r["name"] for r in records]
  arrays["name"] = names
  return Split.from_arrays(arrays)
