"""TFDS builders for the EmoMV datasets (importing this package registers `emomv`)."""

from tfds_emomv import emomv  # noqa: F401  (registers the `emomv` builder with TFDS)
