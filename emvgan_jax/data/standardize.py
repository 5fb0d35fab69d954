"""Per-modality standardisation, fitted on the train split only and saved with every checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from emvgan_jax.data.splits import Split

MODALITIES = ("video", "music")


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Per-modality, per-feature mean and standard deviation, fitted on the train split.

  Matches scikit-learn's StandardScaler (population std; a constant feature keeps std 1), which is what the
  published EmoMV code applies.
  """

  video_mean: np.ndarray
  video_std: np.ndarray
  music_mean: np.ndarray
  music_std: np.ndarray

  @classmethod
  def fit(cls, split: Split) -> Standardizer:
    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
      x = x.astype(np.float64)
      mean, std = x.mean(axis=0), x.std(axis=0)
      std = np.where(std < 1e-12, 1.0, std)
      return mean.astype(np.float32), std.astype(np.float32)

    vm, vs = stats(split.video)
    mm, ms = stats(split.music)
    return cls(video_mean=vm, video_std=vs, music_mean=mm, music_std=ms)

  def width(self, modality: str) -> int:
    """The feature width of `modality` ('video' or 'music') these statistics were fitted on."""
    return len(getattr(self, f"{modality}_mean"))

  def transform(self, modality: str, x: np.ndarray) -> np.ndarray:
    """Raw (N, D) features of one modality, standardised (float32). The width is the caller's to check."""
    return ((x - getattr(self, f"{modality}_mean")) / getattr(self, f"{modality}_std")).astype(np.float32)

  def apply(self, split: Split) -> Split:
    """Returns the split with both modalities standardised (a new object; the input is unchanged)."""
    if split.video_dim != self.width("video") or split.music_dim != self.width("music"):
      raise ValueError(
        f"Standardisation statistics are for video width {self.width('video')} and music width "
        f"{self.width('music')}, but the data has widths {split.video_dim} and {split.music_dim}"
      )
    return dataclasses.replace(
      split, video=self.transform("video", split.video), music=self.transform("music", split.music)
    )

  def to_dict(self) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
    return cls(**{f.name: np.asarray(d[f.name], dtype=np.float32) for f in dataclasses.fields(cls)})
