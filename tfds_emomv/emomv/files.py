"""Reading and validating the files of the EmoMV datasets (pure numpy + h5py, no TFDS).

EmoMV (Thao, Herremans, Roig, Information Fusion 2023) publishes, for each of its three datasets, pair CSVs
with one HDF5 file of video features (SlowFast, 2304-d) and one of music features (VGGish, 128-d) per split,
plus a retrieval gallery (one row per segment) in the same three-file form. Row i of a CSV is row i of both
HDF5 files of that split.

The published files have quirks that this module absorbs, so that callers see one format:

* Retrieval CSVs have 3 columns `dir, filename.mp4, label_id` in EmoMV-A but 4 columns
  `dir, name, emotion_str, label_id` in EmoMV-B/C (the original code read column 3 as the label everywhere,
  which is wrong for B/C).
* The VGGish EmoMV-A retrieval file is float64; everything is returned as float32.
* The single HDF5 dataset is called `default` (SlowFast) or `data` (VGGish); whichever one the file holds is
  read.
* Emotion names are spelled `Exciting` or `exciting`; they are compared case-insensitively.

Everything that does not fit raises `EmoMVFormatError` naming the file (and the 1-based row where there is
one) and what was expected, so that a bad download never turns into silently wrong data.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import socket
import urllib.parse
from collections.abc import Mapping, Sequence

import h5py
import numpy as np

from emvgan_jax import errors

EMOTIONS = ('exciting', 'fear', 'tense', 'sad', 'relax')
MATCH_NAMES = ('mismatched', 'matched')
VIDEO_DIM = 2304
MUSIC_DIM = 128

BASE_URL = 'https://github.com/ivyha010/EmoMV/raw/main/'

# Config name -> dataset folder in the repository.
CONFIG_FOLDERS = {
  'a': 'DS1_EmoMV_A',
  'b': 'DS2_EmoMV_B',
  'c': 'DS3_EmoMV_C',
}

PathLike = str | os.PathLike


class EmoMVFormatError(ValueError):
  """An EmoMV file is missing or does not have the expected content."""


class EmoMVMissingFileError(EmoMVFormatError):
  """An EmoMV file that a split needs does not exist."""


@dataclasses.dataclass(frozen=True)
class SplitFiles:
  """The three files of one split, as paths relative to the repository root.

  Attributes:
    csv: the annotation CSV.
    video: the SlowFast HDF5 file (one 2304-d row per CSV row).
    music: the VGGish HDF5 file (one 128-d row per CSV row).
    kind: `'pairs'` for a pair CSV (7 columns), `'gallery'` for a retrieval CSV (3 or 4 columns).
  """

  csv: str
  video: str
  music: str
  kind: str

  @property
  def paths(self) -> tuple[str, str, str]:
    """The three relative paths: csv, video, music."""
    return (self.csv, self.video, self.music)


def _pair_files(folder: str, ds: str, split: str) -> SplitFiles:
  return SplitFiles(
    csv=f'{folder}/annotation/{ds}_{split}_MATCH_MISMATCH_labels.csv',
    video=f'{folder}/extracted_features/SlowFast_{ds}_{split}_MATCH_MISMATCH.h5',
    music=f'{folder}/extracted_features/VGGish_{ds}_{split}_MATCH_MISMATCH.h5',
    kind='pairs',
  )


def _gallery_files(folder: str, csv_name: str, h5_stem: str) -> SplitFiles:
  return SplitFiles(
    csv=f'{folder}/for_retrieval/{csv_name}',
    video=f'{folder}/for_retrieval/SlowFast_{h5_stem}.h5',
    music=f'{folder}/for_retrieval/VGGish_{h5_stem}.h5',
    kind='gallery',
  )


# (config, split) -> files, in split order. The gallery file names follow no common pattern across the
# three datasets, hence the explicit table.
SPLIT_FILES: dict[tuple[str, str], SplitFiles] = {
  ('a', 'train'): _pair_files('DS1_EmoMV_A', 'DS1', 'TRAIN'),
  ('a', 'validation'): _pair_files('DS1_EmoMV_A', 'DS1', 'VAL'),
  ('a', 'test'): _pair_files('DS1_EmoMV_A', 'DS1', 'TEST'),
  ('a', 'gallery'): _gallery_files(
    'DS1_EmoMV_A',
    'DS1_from_MVED_test_set_5_classes_for_retrieval.csv',
    'DS1_from_MVED_test_set_5_classes_for_retrieval',
  ),
  ('b', 'train'): _pair_files('DS2_EmoMV_B', 'DS2', 'TRAIN'),
  ('b', 'validation'): _pair_files('DS2_EmoMV_B', 'DS2', 'VAL'),
  ('b', 'gallery'): _gallery_files('DS2_EmoMV_B', 'DS2_VAL_labels_for_retrieval.csv', 'DS2_VAL_for_retrieval'),
  ('c', 'train'): _pair_files('DS3_EmoMV_C', 'DS3', 'TRAIN'),
  ('c', 'validation'): _pair_files('DS3_EmoMV_C', 'DS3', 'VAL'),
  ('c', 'gallery'): _gallery_files('DS3_EmoMV_C', 'DS3_VAL_labels_for_retrieval.csv', 'DS3_VAL_for_retrieval'),
}


def splits(config: str) -> tuple[str, ...]:
  """The split names of a config (`'a'`, `'b'` or `'c'`), in build order.

  Args:
    config: the config name.

  Returns:
    e.g. `('train', 'validation', 'gallery')`; EmoMV-A also has `'test'`.
  """
  _check_config(config)
  return tuple(split for cfg, split in SPLIT_FILES if cfg == config)


def split_files(config: str, split: str) -> SplitFiles:
  """The three repository-relative files of one split of one config.

  Args:
    config: `'a'`, `'b'` or `'c'`.
    split: `'train'`, `'validation'`, `'test'` (EmoMV-A only) or `'gallery'`.

  Returns:
    The `SplitFiles` of that split.

  Raises:
    KeyError: for an unknown config or split.
  """
  _check_config(config)
  try:
    return SPLIT_FILES[(config, split)]
  except KeyError:
    raise KeyError(f'EmoMV-{config.upper()} has no split {split!r}; it has {splits(config)}') from None


def config_files(config: str) -> tuple[str, ...]:
  """Every repository-relative file that a config needs, without duplicates, in split order.

  Args:
    config: `'a'`, `'b'` or `'c'`.

  Returns:
    The relative paths.
  """
  paths = []
  for split in splits(config):
    for path in split_files(config, split).paths:
      if path not in paths:
        paths.append(path)
  return tuple(paths)


def url_for(relative_path: str) -> str:
  """The public download URL of a repository-relative path."""
  return BASE_URL + relative_path


def find_missing(root: PathLike, config: str) -> list[str]:
  """The files of a config that are not under `root` (a copy laid out like the repository).

  Args:
    root: the folder holding `DS1_EmoMV_A/` etc.
    config: `'a'`, `'b'` or `'c'`.

  Returns:
    The missing repository-relative paths (empty when all are there).
  """
  root = pathlib.Path(root)
  return [rel for rel in config_files(config) if not (root / rel).is_file()]


def missing_by_split(root: PathLike, config: str) -> dict[str, list[str]]:
  """For each split of a config with files missing under `root`, those files (repository-relative)."""
  root = pathlib.Path(root)
  out = {}
  for split in splits(config):
    missing = [rel for rel in split_files(config, split).paths if not (root / rel).is_file()]
    if missing:
      out[split] = missing
  return out


def missing_files_message(root: PathLike, missing: Sequence[str]) -> str:
  """A message naming each missing file and where it can be downloaded."""
  lines = [f'{len(missing)} EmoMV file(s) missing under {root}:']
  for rel in missing:
    lines.append(f'  {rel} (download: {url_for(rel)})')
  return '\n'.join(lines)


def _check_config(config: str) -> None:
  if config not in CONFIG_FOLDERS:
    raise KeyError(f'unknown EmoMV config {config!r}; expected one of {sorted(CONFIG_FOLDERS)}')


def _known_url(path: PathLike) -> str | None:
  """The download URL of `path` when it ends with a known repository path (for error messages)."""
  posix = pathlib.Path(path).as_posix()
  for split_paths in SPLIT_FILES.values():
    for rel in split_paths.paths:
      if posix == rel or posix.endswith('/' + rel):
        return url_for(rel)
  return None


def _require_file(path: PathLike) -> None:
  if not os.path.isfile(path):
    url = _known_url(path)
    where = f' (download: {url})' if url else ''
    raise EmoMVMissingFileError(f'EmoMV file not found: {os.fspath(path)}{where}')


# ---------------------------------------------------------------------------------------------------------------
# HDF5


def read_features(h5_path: PathLike, *, dim: int | None = None) -> np.ndarray:
  """Reads the single 2-D dataset of an EmoMV feature file as float32.

  The key (`default` in SlowFast files, `data` in VGGish files) does not matter: the file must hold exactly
  one dataset. Float64 files (the EmoMV-A VGGish gallery) are converted.

  Args:
    h5_path: the HDF5 file.
    dim: the expected feature width; None accepts any.

  Returns:
    A `(rows, width)` float32 array.

  Raises:
    EmoMVFormatError: the file is missing or unreadable, holds no or several datasets, the dataset is not a
      2-D numeric array, has another width than `dim`, or holds a non-finite value (also after the float32
      conversion, which would turn a huge float64 into inf).
  """
  with FeatureFile(h5_path, dim=dim) as f:
    return f.read(0, f.rows)


class FeatureFile:
  """An EmoMV feature file opened for reading in row ranges (for files larger than memory), with every check of
  `read_features`: the file's layout when opened, finiteness on each range read (naming the file's row).

  Use as a context manager: `with FeatureFile(path, dim=128) as f: f.read(start, stop)`.
  """

  def __init__(self, h5_path: PathLike, *, dim: int | None = None):
    _require_file(h5_path)
    self.name = os.fspath(h5_path)
    try:
      self._file = h5py.File(h5_path, 'r')
    except OSError as e:
      raise EmoMVFormatError(f'{self.name}: not a readable HDF5 file ({e})') from e
    try:
      self._check_made_with_published_weights()
      self._dataset = self._open_dataset(dim)
    except BaseException:
      self._file.close()
      raise

  def _check_made_with_published_weights(self) -> None:
    """Refuses a file that `emvgan-extract --weights=random` made (its `weights` attribute says so), unless
    $EMVGAN_ALLOW_RANDOM_FEATURES (every command's `--allow_random_features`) allows it: such features have the
    shape of real ones and mean nothing."""
    if str(self._file.attrs.get('weights', '')) != 'random':
      return
    if os.environ.get(errors.RANDOM_FEATURES_ENV, '0') not in ('', '0'):
      return
    raise EmoMVFormatError(
      f'{self.name}: made by emvgan-extract with random {self._file.attrs.get("extractor", "")} weights, so its '
      'features mean nothing; extract them with the published weights, or pass --allow_random_features (or set '
      f'{errors.RANDOM_FEATURES_ENV}=1) to read them anyway (a dry run of the pipeline, tests)'
    )

  def _open_dataset(self, dim: int | None) -> h5py.Dataset:
    found: list[str] = []
    self._file.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Dataset) else None)
    if len(found) != 1:
      raise EmoMVFormatError(
        f'{self.name}: expected exactly one HDF5 dataset (key "default" or "data"), found {len(found)}: {found}'
      )
    key = found[0]
    dataset = self._file[key]
    if dataset.ndim != 2:
      raise EmoMVFormatError(f'{self.name}: dataset "{key}" has shape {dataset.shape}, expected (rows, width)')
    if dataset.dtype.kind not in 'fiu':
      raise EmoMVFormatError(f'{self.name}: dataset "{key}" has dtype {dataset.dtype}, expected floating point')
    if dim is not None and dataset.shape[1] != dim:
      raise EmoMVFormatError(f'{self.name}: features are {dataset.shape[1]} wide, expected {dim}')
    return dataset

  @property
  def rows(self) -> int:
    return int(self._dataset.shape[0])

  @property
  def width(self) -> int:
    return int(self._dataset.shape[1])

  def read(self, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) as float32.

    Raises:
      EmoMVFormatError: a non-finite value (also after the float32 conversion), naming its 1-based row of the
        file and its column.
    """
    try:
      raw = self._dataset[start:stop]
    except OSError as e:  # a truncated or damaged file fails here rather than when opened
      raise EmoMVFormatError(f'{self.name}: rows {start + 1}-{stop} cannot be read ({e})') from e
    with np.errstate(over='ignore'):  # an overflow to inf is reported below, with its row
      features = raw.astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
      row, col = np.argwhere(bad)[0]
      raise EmoMVFormatError(
        f'{self.name}: row {start + row + 1}, column {col + 1}: non-finite value {raw[row, col]!r} '
        f'({int(bad.any(axis=1).sum())} row(s) affected'
        + ('' if start == 0 and stop >= self.rows else f' in rows {start + 1}-{min(stop, self.rows)}')
        + '); expected finite features'
      )
    return features

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> FeatureFile:
    return self

  def __exit__(self, *exc) -> None:  # noqa: ANN002
    self.close()


# ---------------------------------------------------------------------------------------------------------------
# CSV


def _read_csv_rows(csv_path: PathLike) -> list[list[str]]:
  """Rows of a header-less CSV; trailing blank lines are dropped, blank lines elsewhere are an error."""
  _require_file(csv_path)
  name = os.fspath(csv_path)
  try:
    # utf-8-sig: a BOM written by a spreadsheet must not end up in the first field.
    with open(csv_path, newline='', encoding='utf-8-sig') as f:
      rows = list(csv.reader(f))
  except (UnicodeDecodeError, csv.Error) as e:
    raise EmoMVFormatError(f'{name}: not a readable CSV file ({e})') from e
  while rows and not any(field.strip() for field in rows[-1]):
    rows.pop()
  if not rows:
    raise EmoMVFormatError(f'{name}: the CSV has no rows')
  for i, row in enumerate(rows):
    if not any(field.strip() for field in row):
      raise EmoMVFormatError(f'{name}: row {i + 1} is empty')
  return rows


def _int_field(name: str, row: int, column: int, what: str, value: str) -> int:
  try:
    return int(value.strip())
  except ValueError:
    raise EmoMVFormatError(f'{name}: row {row}, column {column} ({what}): {value!r} is not an integer') from None


def _emotion_id(name: str, row: int, column: int, what: str, value: str) -> int:
  label = _int_field(name, row, column, what, value)
  if not 0 <= label < len(EMOTIONS):
    raise EmoMVFormatError(
      f'{name}: row {row}, column {column} ({what}): {label} is outside 0..{len(EMOTIONS) - 1} {EMOTIONS}'
    )
  return label


def _check_emotion_name(name: str, row: int, column: int, what: str, value: str, label: int) -> None:
  spelled = value.strip().lower()
  if spelled not in EMOTIONS:
    raise EmoMVFormatError(
      f'{name}: row {row}, column {column} ({what}): unknown emotion {value!r}, expected one of {EMOTIONS}'
    )
  if EMOTIONS.index(spelled) != label:
    raise EmoMVFormatError(
      f'{name}: row {row}, column {column} ({what}): emotion {value!r} disagrees with its id {label} '
      f'({EMOTIONS[label]})'
    )


def _nonempty_name(name: str, row: int, column: int, value: str) -> str:
  value = value.strip()
  if not value:
    raise EmoMVFormatError(f'{name}: row {row}, column {column} (name) is empty')
  return value


def _features_for(
  csv_path: PathLike, n_rows: int, video_h5: PathLike, music_h5: PathLike, video_dim: int | None, music_dim: int | None
) -> tuple[np.ndarray, np.ndarray]:
  video = read_features(video_h5, dim=video_dim)
  music = read_features(music_h5, dim=music_dim)
  for path, features in ((video_h5, video), (music_h5, music)):
    check_feature_rows(path, features.shape[0], csv_path, n_rows)
  return video, music


def check_feature_rows(h5_path: PathLike, rows: int, csv_path: PathLike, csv_rows: int) -> None:
  """One feature row per CSV row.

  Raises:
    EmoMVFormatError: naming both files and both counts.
  """
  if rows != csv_rows:
    raise EmoMVFormatError(
      f'{os.fspath(h5_path)}: {rows} feature rows, but {os.fspath(csv_path)} has {csv_rows} rows; '
      'expected one feature row per CSV row'
    )


def read_pairs(
  csv_path: PathLike,
  video_h5: PathLike,
  music_h5: PathLike,
  *,
  video_dim: int | None = VIDEO_DIM,
  music_dim: int | None = MUSIC_DIM,
) -> dict[str, np.ndarray]:
  """Reads and validates one pair split: the 7-column CSV and its two feature files.

  CSV columns (no header): `dir, name, match(0/1), video_emotion_str, music_emotion_str, video_emotion_id,
  music_emotion_id`.

  Args:
    csv_path: the pair CSV.
    video_h5: the video (SlowFast) feature file, row i = CSV row i.
    music_h5: the music (VGGish) feature file, row i = CSV row i.
    video_dim: the expected video width; None accepts any.
    music_dim: the expected music width; None accepts any.

  Returns:
    `name` (n,) str, `video` (n, dv) float32, `music` (n, dm) float32, `match` (n,) int64 (1 = matched),
    `video_emotion` and `music_emotion` (n,) int64 indices into `EMOTIONS`; in file row order.

  Raises:
    EmoMVFormatError: on any missing file or malformed content (the message names the file and row).
  """
  labels = _parse_pair_rows(csv_path)
  video, music = _features_for(csv_path, len(labels['name']), video_h5, music_h5, video_dim, music_dim)
  _check_pairs(os.fspath(csv_path), *(labels[k] for k in _LABEL_KEYS))
  return _label_arrays(labels, video=video, music=music)


_LABEL_KEYS = ('name', 'match', 'video_emotion', 'music_emotion')


def _label_arrays(labels: Mapping[str, list], **features: np.ndarray) -> dict[str, np.ndarray]:
  out = {'name': np.asarray(labels['name'], dtype=np.str_), **features}
  out.update({k: np.asarray(labels[k], dtype=np.int64) for k in _LABEL_KEYS[1:]})
  return out


def read_pair_labels(csv_path: PathLike) -> dict[str, np.ndarray]:
  """The CSV half of `read_pairs`, with all its checks: `name`, `match`, `video_emotion`, `music_emotion`.

  Raises:
    EmoMVFormatError: on a missing file or malformed content (the message names the file and row).
  """
  labels = _parse_pair_rows(csv_path)
  _check_pairs(os.fspath(csv_path), *(labels[k] for k in _LABEL_KEYS))
  return _label_arrays(labels)


def _parse_pair_rows(csv_path: PathLike) -> dict[str, list]:
  rows = _read_csv_rows(csv_path)
  name = os.fspath(csv_path)
  names, match, video_emotion, music_emotion = [], [], [], []
  for i, row in enumerate(rows, start=1):
    if len(row) != 7:
      raise EmoMVFormatError(
        f'{name}: row {i} has {len(row)} columns, expected 7 (dir, name, match, video_emotion, '
        'music_emotion, video_emotion_id, music_emotion_id)'
      )
    names.append(_nonempty_name(name, i, 2, row[1]))
    m = _int_field(name, i, 3, 'match', row[2])
    if m not in (0, 1):
      raise EmoMVFormatError(f'{name}: row {i}, column 3 (match): {m}, expected 0 (mismatched) or 1 (matched)')
    v = _emotion_id(name, i, 6, 'video_emotion_id', row[5])
    a = _emotion_id(name, i, 7, 'music_emotion_id', row[6])
    _check_emotion_name(name, i, 4, 'video_emotion', row[3], v)
    _check_emotion_name(name, i, 5, 'music_emotion', row[4], a)
    match.append(m)
    video_emotion.append(v)
    music_emotion.append(a)
  return {'name': names, 'match': match, 'video_emotion': video_emotion, 'music_emotion': music_emotion}


def _check_pairs(
  csv_name: str, names: Sequence[str], match: Sequence[int], video_emotion: Sequence[int], music_emotion: Sequence[int]
) -> None:
  """The properties every EmoMV pair split has (docs/data.md): unique names, `match` equal to whether the two
  emotions agree, and every mismatched pair named `A_PAIR_B` with its swap `B_PAIR_A` in the split."""
  first: dict[str, int] = {}
  for i, n in enumerate(names, start=1):
    if n in first:
      raise EmoMVFormatError(f'{csv_name}: row {i}: pair name {n!r} repeats row {first[n]}; names must be unique')
    first[n] = i
  for i, (n, m, v, a) in enumerate(zip(names, match, video_emotion, music_emotion), start=1):
    if m != int(v == a):
      raise EmoMVFormatError(
        f'{csv_name}: row {i} ({n}): match={m} but the video emotion is {EMOTIONS[v]!r} and the music emotion '
        f'{EMOTIONS[a]!r}; match must be 1 exactly when the two agree'
      )
    if m == 0:
      parts = n.split('_PAIR_')
      if len(parts) != 2 or not all(parts):
        raise EmoMVFormatError(f'{csv_name}: row {i}: mismatched pair {n!r} is not named A_PAIR_B')
      swap = f'{parts[1]}_PAIR_{parts[0]}'
      if swap not in first:
        raise EmoMVFormatError(f'{csv_name}: row {i}: mismatched pair {n!r} has no swap {swap!r} in the split')


def check_disjoint_splits(
  names_by_split: Mapping[str, Sequence[str]], csv_by_split: Mapping[str, object] | None = None
) -> None:
  """No pair name in two pair splits.

  Args:
    names_by_split: each pair split's names.
    csv_by_split: the CSV each split was read from, named in the error (optional).

  Raises:
    EmoMVFormatError: naming a shared name, the two splits and, when given, their two CSV files.
  """
  seen: dict[str, str] = {}
  for split, names in names_by_split.items():
    for n in names:
      n = str(n)
      if n in seen and seen[n] != split:
        first, second = seen[n], split
        if csv_by_split:
          raise EmoMVFormatError(
            f'pair {n!r} is in both {csv_by_split[first]} (the {first} split) and {csv_by_split[second]} (the '
            f'{second} split); a pair belongs to one split: remove it from one of the two files'
          )
        raise EmoMVFormatError(f'pair {n!r} is in both the {first} and the {second} split; splits must not overlap')
      seen[n] = split


def check_reachable(url: str, timeout: float = 5.0) -> None:
  """Fails in seconds, not minutes, when the host of `url` cannot be reached (offline machine, no proxy).

  Raises:
    EmoMVMissingFileError: with the hint to build from a local copy.
  """

  host = urllib.parse.urlparse(url).hostname
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
  except OSError as e:
    raise EmoMVMissingFileError(
      f'cannot reach {host} to download EmoMV ({e}); build from a local copy instead: set EMOMV_DIR or '
      '--config.data.manual_dir to a folder laid out like the EmoMV repository'
    ) from None


def gallery_name(filename: str, label: int) -> str:
  """The gallery name of a 3-column (EmoMV-A style) retrieval row.

  EmoMV-A's retrieval CSV holds bare file names (`ORG_EXT(154).mp4`) inside per-class folders, so the same
  file name could occur in two classes. The name is made unique and consistent with EmoMV-A's pair CSVs,
  which call the same segment `exciting_ORG_EXT(154)`: the emotion name, an underscore, and the file name
  without its `.mp4` extension.

  Args:
    filename: the file name of column 2.
    label: the emotion id of column 3.

  Returns:
    e.g. `exciting_ORG_EXT(154)`.
  """
  stem = filename[: -len('.mp4')] if filename.lower().endswith('.mp4') else filename
  return f'{EMOTIONS[label]}_{stem}'


def read_gallery(
  csv_path: PathLike,
  video_h5: PathLike,
  music_h5: PathLike,
  *,
  video_dim: int | None = VIDEO_DIM,
  music_dim: int | None = MUSIC_DIM,
) -> dict[str, np.ndarray]:
  """Reads and validates a retrieval gallery: one row per segment with its own video and music.

  Accepts both published CSV formats (no header): 3 columns `dir, filename.mp4, label_id` (EmoMV-A; the
  name becomes `gallery_name(filename, label)`, e.g. `exciting_ORG_EXT(154)`) and 4 columns
  `dir, name, emotion_str, label_id` (EmoMV-B/C; the name is kept). All rows of a file must have the same
  format, and names must be unique, since retrieval tools look gallery items up by name.

  Args:
    csv_path: the retrieval CSV.
    video_h5: the video feature file, row i = CSV row i.
    music_h5: the music feature file, row i = CSV row i.
    video_dim: the expected video width; None accepts any.
    music_dim: the expected music width; None accepts any.

  Returns:
    The same keys as `read_pairs`, with `match` all 1 and `video_emotion` = `music_emotion` = the label.

  Raises:
    EmoMVFormatError: on any missing file or malformed content (the message names the file and row).
  """
  labels = read_gallery_labels(csv_path)
  video, music = _features_for(csv_path, len(labels['name']), video_h5, music_h5, video_dim, music_dim)
  return {**labels, 'video': video, 'music': music}


def read_gallery_labels(csv_path: PathLike) -> dict[str, np.ndarray]:
  """The CSV half of `read_gallery`, with all its checks: `name`, `match` (all 1), both emotions (the label).

  Raises:
    EmoMVFormatError: on a missing file or malformed content (the message names the file and row).
  """
  rows = _read_csv_rows(csv_path)
  name = os.fspath(csv_path)
  n_columns = len(rows[0])
  if n_columns not in (3, 4):
    raise EmoMVFormatError(
      f'{name}: row 1 has {n_columns} columns, expected 3 (dir, filename.mp4, label_id) or 4 (dir, name, '
      'emotion, label_id)'
    )
  names, labels = [], []
  first_row_of: dict[str, int] = {}
  for i, row in enumerate(rows, start=1):
    if len(row) != n_columns:
      raise EmoMVFormatError(
        f'{name}: row {i} has {len(row)} columns, expected {n_columns} like row 1 (3 or 4 columns, not mixed)'
      )
    label = _emotion_id(name, i, n_columns, 'label_id', row[-1])
    raw_name = _nonempty_name(name, i, 2, row[1])
    if n_columns == 3:
      item = gallery_name(raw_name, label)
    else:
      _check_emotion_name(name, i, 3, 'emotion', row[2], label)
      item = raw_name
    if item in first_row_of:
      raise EmoMVFormatError(
        f'{name}: row {i}: gallery name {item!r} repeats row {first_row_of[item]}; expected unique names'
      )
    first_row_of[item] = i
    names.append(item)
    labels.append(label)
  return _label_arrays({'name': names, 'match': [1] * len(rows), 'video_emotion': labels, 'music_emotion': labels})


def read_split(
  root: PathLike,
  config: str,
  split: str,
  *,
  video_dim: int | None = VIDEO_DIM,
  music_dim: int | None = MUSIC_DIM,
) -> dict[str, np.ndarray]:
  """Reads one split of one config from a copy laid out like the EmoMV repository.

  Args:
    root: the folder holding `DS1_EmoMV_A/` etc.
    config: `'a'`, `'b'` or `'c'`.
    split: a split of that config (see `splits`).
    video_dim: the expected video width; None accepts any.
    music_dim: the expected music width; None accepts any.

  Returns:
    The dict of `read_pairs` / `read_gallery`.

  Raises:
    EmoMVMissingFileError: a file of the split is missing (all of them are named, with download URLs).
    EmoMVFormatError: a file is malformed.
  """
  files = split_files(config, split)
  root = pathlib.Path(root)
  missing = [rel for rel in files.paths if not (root / rel).is_file()]
  if missing:
    raise EmoMVMissingFileError(missing_files_message(root, missing))
  reader = read_pairs if files.kind == 'pairs' else read_gallery
  return reader(root / files.csv, root / files.video, root / files.music, video_dim=video_dim, music_dim=music_dim)
