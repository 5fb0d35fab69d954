"""Reading a user's media with PyAV (FFmpeg): the audio track as a mono waveform, the video as SlowFast clips.

The video recipe is PyTorchVideo's for its Kinetics SlowFast-R50 checkpoint: frames at 30 per second, the
short side scaled to 256 and a 256 x 256 centre crop, RGB in [0, 1] normalised by mean 0.45 and std 0.225;
a clip is 32 frames 2 apart (2.13 s) for the fast pathway and 8 of those, `linspace(0, 31, 8)`, for the slow one.
How EmoMV covered a longer segment is not published: here every whole 2.13 s window of the segment is one clip
and the segment's vector is the mean of the clips' vectors (as VGGish's is the mean of its 0.96 s patches); a
segment shorter than one window gives one clip of 32 frames spread evenly over it (docs/data.md).
"""

from __future__ import annotations

import numpy as np

FPS = 30.0
SHORT_SIDE = 256
CROP = 256
MEAN, STD = 0.45, 0.225
FAST_FRAMES, FRAME_STRIDE, ALPHA = 32, 2, 4
WINDOW = FAST_FRAMES * FRAME_STRIDE  # frames at FPS per clip


class MediaError(ValueError):
  """A file that cannot be read as the media asked for (no such stream, undecodable, too short)."""


def _open(path: str):  # noqa: ANN202
  import av  # pylint: disable=g-import-not-at-top  (the [extract] extra)

  try:
    return av.open(path)
  except (OSError, av.error.FFmpegError) as e:
    raise MediaError(f"{path}: cannot be opened as media ({e})") from None


def read_audio(path: str) -> tuple[np.ndarray, int]:
  """(mono float32 waveform in [-1, 1], sample rate) of the first audio stream; channels are averaged."""
  import av  # pylint: disable=g-import-not-at-top

  with _open(path) as container:
    if not container.streams.audio:
      raise MediaError(f"{path}: has no audio stream")
    stream = container.streams.audio[0]
    rate = stream.rate or stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
    chunks = []
    for frame in container.decode(stream):
      for out in resampler.resample(frame):
        chunks.append(out.to_ndarray())
    for out in resampler.resample(None):  # flush
      chunks.append(out.to_ndarray())
  if not chunks:
    raise MediaError(f"{path}: its audio stream holds no samples")
  return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), int(rate)


def _scaled_size(width: int, height: int) -> tuple[int, int]:
  if width <= height:
    return SHORT_SIDE, max(SHORT_SIDE, int(round(height * SHORT_SIDE / width)))
  return max(SHORT_SIDE, int(round(width * SHORT_SIDE / height))), SHORT_SIDE


def read_frames(path: str) -> np.ndarray:
  """(T, 256, 256, 3) uint8 RGB frames resampled to 30 per second (the decoded frame shown at each instant),
  short side scaled to 256 (bilinear) and centre-cropped."""
  with _open(path) as container:
    if not container.streams.video:
      raise MediaError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    times, frames = [], []
    for frame in container.decode(stream):
      if frame.time is None:
        continue
      width, height = _scaled_size(frame.width, frame.height)
      rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
      top, left = (height - CROP) // 2, (width - CROP) // 2
      frames.append(rgb[top : top + CROP, left : left + CROP])
      times.append(float(frame.time))
  if not frames:
    raise MediaError(f"{path}: its video stream holds no frames")
  times = np.asarray(times) - times[0]
  duration = times[-1] + (np.median(np.diff(times)) if len(times) > 1 else 1.0 / FPS)
  wanted = np.arange(int(np.floor(duration * FPS + 1e-6))) / FPS
  index = np.clip(np.searchsorted(times, wanted + 1e-6, side="right") - 1, 0, len(frames) - 1)
  return np.stack(frames)[index]


def slowfast_clips(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(slow (C, 8, 256, 256, 3), fast (C, 32, 256, 256, 3)) normalised float32 clips of a segment's frames."""
  if len(frames) >= WINDOW:
    starts = range(0, len(frames) - WINDOW + 1, WINDOW)
    fast_index = np.stack([np.arange(s, s + WINDOW, FRAME_STRIDE) for s in starts])
  else:  # one clip spread over the whole (short) segment
    fast_index = np.round(np.linspace(0, len(frames) - 1, FAST_FRAMES)).astype(int)[None]
  fast = (frames[fast_index].astype(np.float32) / 255.0 - MEAN) / STD
  slow = fast[:, np.linspace(0, FAST_FRAMES - 1, FAST_FRAMES // ALPHA).astype(int)]
  return slow, fast
