"""Building an EmoMV config to array_record: the library function behind `python -m tfds_emomv.build`, also
called by the training input pipeline on first use (this module defines no flags, so any program can import it).
"""

from __future__ import annotations

import contextlib
import io
import os

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

import tfds_emomv.emomv  # noqa: F401  (registers the `emomv` builder)
from tfds_emomv import commands
from tfds_emomv.emomv import files


def build_one(
  name: str, data_dir: str, manual_dir: str | None = None, overwrite: bool = False, partial: bool = False
) -> dict[str, int]:
  """Builds one dataset (e.g. `emomv/c`) to array_record.

  Args:
    name: the dataset name with its config, `emomv/a`, `emomv/b` or `emomv/c`.
    data_dir: the TFDS data_dir to write into.
    manual_dir: an optional local copy laid out like the repository.
    overwrite: rebuild when the dataset already exists.
    partial: build the splits whose files are all in `manual_dir`, skipping the others (`skipped_splits`).

  Returns:
    Examples per split.

  Raises:
    files.EmoMVFormatError: a file is missing or malformed (nothing is left in data_dir).
    ValueError: `name` is not an emomv config.
  """
  # `~/tensorflow_datasets` from a shell flag or a config arrives unexpanded: never make a folder named '~'.
  data_dir = os.path.expanduser(data_dir) if data_dir else data_dir
  manual_dir = os.path.expanduser(manual_dir) if manual_dir else manual_dir
  dataset, _, config = name.partition('/')
  if dataset != 'emomv' or config not in files.CONFIG_FOLDERS:
    raise ValueError(
      f'unknown dataset {name!r}: expected one of ' + ', '.join(f'emomv/{c}' for c in files.CONFIG_FOLDERS)
    )
  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record', partial=partial)
  mode = (
    tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    if overwrite
    else (tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  )
  try:
    with _quiet_tfds():
      builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir,
          download_mode=mode,
          # The dataset is not hosted on GCS; asking would need network access for nothing.
          try_download_gcs=False,
        ),
      )
  except Exception:
    # TFDS already removed its incomplete.* folder; also drop the then empty `emomv/<config>/` so that a
    # failed build leaves no trace of that config in data_dir.
    config_dir = builder.data_path.parent
    if config_dir.is_dir() and not any(config_dir.iterdir()):
      config_dir.rmdir()
    raise
  return {split: info.num_examples for split, info in builder.info.splits.items()}


def skipped_splits(builder: tfds.core.DatasetBuilder) -> dict[str, list[str]]:
  """The splits a partial build skipped, each with the files it lacked (empty for a complete build)."""
  metadata = builder.info.metadata or {}
  return {split: list(rels) for split, rels in (metadata.get('skipped_splits') or {}).items()}


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS's progress bars and its two bold lines to stdout ("Downloading and preparing dataset ...", "...
  Subsequent calls will reuse this data") are held back: a build says what it built in one line of its own.
  With --verbose ($EMVGAN_VERBOSE) they are shown."""
  if commands.verbose():
    yield
    return

  shown = tqdm_utils._active  # pylint: disable=protected-access  (no public getter)
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    tfds.display_progress_bar(shown)
