"""Per-modality standardisation, fitted on the train split only and saved with every checkpoint."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from emvgan_jax.data.splits import Split

MODALITIES = ("video", "music")
CHUNK_ROWS = 16384  # rows per streaming pass
COLUMN_BLOCK = 256  # columns per float64 temporary: 16,384 x 256 float64 values are 34 MB


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
    """Float64 statistics in two streaming passes of `CHUNK_ROWS` rows (the mean, then the squared deviations
    from it), so fitting holds no float64 copy of a modality: memory is one chunk, whatever the split's size.
    A split on disk is read twice, a chunk at a time (each record once per pass for both modalities)."""
    n = max(len(split), 1)

    def chunks():
      for start in range(0, len(split), CHUNK_ROWS):
        yield split.features(slice(start, start + CHUNK_ROWS))

    totals = [np.zeros(split.video_dim, np.float64), np.zeros(split.music_dim, np.float64)]
    for chunk in chunks():
      for total, x in zip(totals, chunk):
        total += x.sum(axis=0, dtype=np.float64)
    means = [total / n for total in totals]
    squares = [np.zeros_like(total) for total in totals]
    for chunk in chunks():
      for square, x, mean in zip(squares, chunk, means):
        # Column blocks bound the float64 temporary (each column's sum runs over the rows in the same order).
        for c in range(0, x.shape[1], COLUMN_BLOCK):
          deviation = x[:, c : c + COLUMN_BLOCK].astype(np.float64)
          deviation -= mean[c : c + COLUMN_BLOCK]
          deviation *= deviation
          square[c : c + COLUMN_BLOCK] += deviation.sum(axis=0)
    stds = [np.sqrt(square / n) for square in squares]
    stds = [np.where(std < 1e-12, 1.0, std) for std in stds]
    (vm, mm), (vs, ms) = [m.astype(np.float32) for m in means], [s.astype(np.float32) for s in stds]
    return cls(video_mean=vm, video_std=vs, music_mean=mm, music_std=ms)

  def width(self, modality: str) -> int:
    """The feature width of `modality` ('video' or 'music') these statistics were fitted on."""
    return len(getattr(self, f"{modality}_mean"))

  def transform(self, modality: str, x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Raw (N, D) features of one modality, standardised (float32). The width is the caller's to check.

    Written chunk by chunk into one float32 array (`out`, which may be `x` itself when it is float32): no
    temporaries the size of the input."""
    x = np.asarray(x)
    mean, std = getattr(self, f"{modality}_mean"), getattr(self, f"{modality}_std")
    out = np.empty(x.shape, np.float32) if out is None else out
    for start in range(0, len(x), CHUNK_ROWS):
      rows = slice(start, start + CHUNK_ROWS)
      if x.dtype == np.float32:  # in place, in float32, as (x - mean) / std computes it
        np.subtract(x[rows], mean, out=out[rows])
        np.divide(out[rows], std, out=out[rows])
      else:  # in the input's precision, then rounded once to float32
        out[rows] = (x[rows] - mean) / std
    return out

  def apply(self, split: Split, *, in_place: bool = False) -> Split:
    """Returns the split with both modalities standardised: a new object with new arrays, the input unchanged;
    or, with `in_place` (for a split whose float32 arrays nothing else uses), the same arrays overwritten, so no
    second copy of the features is ever held."""
    if split.video_dim != self.width("video") or split.music_dim != self.width("music"):
      raise ValueError(
        f"Standardisation statistics are for video width {self.width('video')} and music width "
        f"{self.width('music')}, but the data has widths {split.video_dim} and {split.music_dim}"
      )
    if split.on_disk:  # rows are standardised as they are read (a new array per batch)
      if split.video.transform is not None or split.music.transform is not None:
        raise ValueError("this split on disk is standardised already")
      return dataclasses.replace(
        split,
        video=dataclasses.replace(split.video, transform=functools.partial(self.transform, "video")),
        music=dataclasses.replace(split.music, transform=functools.partial(self.transform, "music")),
      )
    if in_place and split.video.dtype == np.float32 and split.music.dtype == np.float32:
      return dataclasses.replace(
        split,
        video=self.transform("video", split.video, out=split.video),
        music=self.transform("music", split.music, out=split.music),
      )
    return dataclasses.replace(
      split, video=self.transform("video", split.video), music=self.transform("music", split.music)
    )

  def to_dict(self) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
    return cls(**{f.name: np.asarray(d[f.name], dtype=np.float32) for f in dataclasses.fields(cls)})
