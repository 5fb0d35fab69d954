"""TFDS builder `emomv`: the EmoMV affective music-video correspondence datasets (configs a, b, c).

Each config holds SlowFast video features, VGGish music features, the match label and both emotion labels
of every pair of the published pair splits, plus the retrieval gallery (one row per segment). The files come
from the public repository (download, verified against `checksums.tsv`) or from a local copy laid out like
that repository (`manual_dir`). All files of a config are read and validated before anything is written, so
a bad or missing file fails the build with an `EmoMVFormatError` and leaves no partly built dataset.

`partial=True` (a builder keyword: `tfds.builder('emomv/a', partial=True)`, or `python -m tfds_emomv.build
--partial`) builds, from a local copy that lacks files, every split whose files are all present, and records each
skipped split with its missing files in the dataset's metadata (`info.metadata['skipped_splits']`), so that code
asking for a skipped split can say which files it needs. A copy with no complete split is still an error.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from tfds_emomv.emomv import files

_HOMEPAGE = 'https://github.com/ivyha010/EmoMV'

_CONFIG_DESCRIPTIONS = {
  'a': 'EmoMV-A (DS1_EmoMV_A): MVED music-video segments, human labels; train/validation/test pairs and '
  'the 250-segment MVED test retrieval gallery.',
  'b': 'EmoMV-B (DS2_EmoMV_B): other public music-video segments, labels predicted by a network; '
  'train/validation pairs and the 120-segment validation retrieval gallery.',
  'c': 'EmoMV-C (DS3_EmoMV_C): self-collected YouTube music videos, labels predicted by a network; '
  'train/validation pairs and the 96-segment validation retrieval gallery.',
}


class Builder(tfds.core.GeneratorBasedBuilder):
  """DatasetBuilder for EmoMV (registered as `emomv`, configs `a`, `b`, `c`)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release: features, labels and retrieval gallery of EmoMV-A, -B, -C.'}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=name, description=_CONFIG_DESCRIPTIONS[name]) for name in files.CONFIG_FOLDERS
  ]
  # Setting this is what lets `dl_manager.manual_dir` be read at all; manual_dir is optional here.
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Optional. Without a manual_dir the files are downloaded from https://github.com/ivyha010/EmoMV.
  To build from a local copy instead, pass as manual_dir a folder laid out like that repository, i.e.
  holding DS1_EmoMV_A/, DS2_EmoMV_B/ and/or DS3_EmoMV_C/ with their annotation/, extracted_features/ and
  for_retrieval/ subfolders (a `git clone` of the repository works).
  """

  def __init__(self, *, file_format=None, partial: bool = False, **kwargs):  # noqa: ANN001, ANN003  (TFDS's)
    # array_record by default (TFDS's default is tfrecord, which needs TensorFlow to read): then
    # `tfds.data_source('emomv/c', data_dir=...)` and `tfds.builder('emomv/c')` work from plain JAX code.
    super().__init__(file_format=file_format or 'array_record', **kwargs)
    self._partial = partial

  def _info(self) -> tfds.core.DatasetInfo:
    """Returns the dataset metadata."""
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          'video': tfds.features.Tensor(shape=(files.VIDEO_DIM,), dtype=np.float32),
          'music': tfds.features.Tensor(shape=(files.MUSIC_DIM,), dtype=np.float32),
          'match': tfds.features.ClassLabel(names=list(files.MATCH_NAMES)),
          'video_emotion': tfds.features.ClassLabel(names=list(files.EMOTIONS)),
          'music_emotion': tfds.features.ClassLabel(names=list(files.EMOTIONS)),
          'name': tfds.features.Text(),
        }
      ),
      supervised_keys=None,
      homepage=_HOMEPAGE,
      metadata=tfds.core.MetadataDict(),  # 'skipped_splits' of a partial build
      # Row order must be file row order: row i of a split is row i of its CSV and HDF5 files, and
      # gallery item i is the counterpart of query i. Without this TFDS orders examples by key hash.
      disable_shuffling=True,
    )

  def _local_root(self, dl_manager: tfds.download.DownloadManager) -> pathlib.Path | None:
    """The manual_dir when one is given (None: download).

    Raises:
      EmoMVMissingFileError: a manual_dir was given but does not exist or lacks this config's dataset folder (a
        given copy is never silently replaced by a download).
    """
    manual_dir = getattr(dl_manager, '_manual_dir', None)  # TFDS's public property asserts instead of saying
    if not manual_dir:
      return None
    root = pathlib.Path(os.path.expanduser(os.fspath(manual_dir)))
    default = pathlib.Path(os.fspath(dl_manager.download_dir)) / 'manual'  # what TFDS sets when none is given
    if root == default and not root.is_dir():
      return None
    folder = files.CONFIG_FOLDERS[self.builder_config.name]
    if not root.is_dir():
      raise files.EmoMVMissingFileError(
        f'manual_dir {root} does not exist: point it (EMOMV_DIR, or --config.data.manual_dir) at a copy of the '
        'EmoMV repository, or leave it unset to download the files'
      )
    if not (root / folder).is_dir():
      raise files.EmoMVMissingFileError(
        f'manual_dir {root} has no {folder}/ folder: it must be laid out like the EmoMV repository '
        f'({", ".join(files.CONFIG_FOLDERS.values())}), or leave it unset to download the files'
      )
    return root

  def _download(self, dl_manager: tfds.download.DownloadManager) -> dict[str, pathlib.Path]:
    """Downloads every file of the config; returns repository-relative path -> local path."""
    files.check_reachable(files.BASE_URL)
    paths = {}
    # One file at a time, so that a failure can name the file and its URL.
    for rel in files.config_files(self.builder_config.name):
      url = files.url_for(rel)
      try:
        paths[rel] = pathlib.Path(dl_manager.download(url))
      except Exception as e:  # pylint: disable=broad-except
        raise files.EmoMVMissingFileError(f'could not download EmoMV file {rel} from {url}: {e}') from e
    return paths

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
    """Reads and validates every split of the config, then returns one generator per split."""
    config = self.builder_config.name
    root = self._local_root(dl_manager)
    skipped = {}
    if root is not None:
      logging.info('Reading EmoMV-%s from manual_dir %s', config.upper(), root)
      # Name every missing file of the config at once rather than only the first split's.
      missing = files.find_missing(root, config)
      if missing and self._partial:
        skipped = files.missing_by_split(root, config)
      if missing and (not self._partial or len(skipped) == len(files.splits(config))):
        raise files.EmoMVMissingFileError(files.missing_files_message(root, missing))
      local = {rel: root / rel for rel in files.config_files(config) if rel not in missing}
    else:
      local = self._download(dl_manager)
    for split, rels in skipped.items():
      logging.warning('EmoMV-%s: split %s skipped (missing: %s)', config.upper(), split, ', '.join(rels))
    self.info.metadata['skipped_splits'] = skipped

    # Read everything before returning any generator: TFDS starts writing as soon as it iterates the
    # first one, and a validation error in a later split must not leave a partly written split behind.
    data = {}
    for split in (s for s in files.splits(config) if s not in skipped):
      split_paths = files.split_files(config, split)
      reader = files.read_pairs if split_paths.kind == 'pairs' else files.read_gallery
      data[split] = reader(local[split_paths.csv], local[split_paths.video], local[split_paths.music])
    pair_splits = [s for s in data if files.split_files(config, s).kind == 'pairs']
    files.check_disjoint_splits(
      {s: data[s]['name'] for s in pair_splits}, {s: local[files.split_files(config, s).csv] for s in pair_splits}
    )
    return {split: self._generate_examples(arrays) for split, arrays in data.items()}

  def _generate_examples(self, arrays: Mapping[str, np.ndarray]) -> Iterator[tuple[int, dict]]:
    """Yields (row index, example) in file row order."""
    for i in range(len(arrays['name'])):
      yield (
        i,
        {
          'video': arrays['video'][i],
          'music': arrays['music'][i],
          'match': int(arrays['match'][i]),
          'video_emotion': int(arrays['video_emotion'][i]),
          'music_emotion': int(arrays['music_emotion'][i]),
          'name': str(arrays['name'][i]),
        },
      )
