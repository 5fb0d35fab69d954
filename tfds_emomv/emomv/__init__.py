"""The `emomv` TFDS builder (EmoMV-A/B/C) and its file readers; importing this registers `emomv`."""

from tfds_emomv.emomv import files
from tfds_emomv.emomv.emomv_dataset_builder import Builder
from tfds_emomv.emomv.files import (
  EMOTIONS,
  EmoMVFormatError,
  EmoMVMissingFileError,
  read_features,
  read_gallery,
  read_pairs,
)

__all__ = [
  'Builder',
  'EMOTIONS',
  'EmoMVFormatError',
  'EmoMVMissingFileError',
  'files',
  'read_features',
  'read_gallery',
  'read_pairs',
]
