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

from emvgan_jax import errors

FPS = 30.0
SHORT_SIDE = 256
CROP = 256
MEAN, STD = 0.45, 0.225
FAST_FRAMES, FRAME_STRIDE, ALPHA = 32, 2, 4
WINDOW = FAST_FRAMES * FRAME_STRIDE  # frames at FPS per clip


class MediaError(errors.Error, ValueError):
  """A file that cannot be read as the media asked for (no such stream, undecodable, too short)."""


def _open(path: str):  # noqa: ANN202
  import av  # deferred: PyAV, the [extract] extra, only to decode media

  try:
    return av.open(path)
  except (OSError, av.error.FFmpegError) as e:
    raise MediaError(f"{path}: cannot be opened as media ({e})") from None


def read_audio(path: str) -> tuple[np.ndarray, int]:
  """(mono float32 waveform in [-1, 1], sample rate) of the first audio stream; channels are averaged."""
  import av  # deferred: PyAV, the [extract] extra, only to decode media

  with _open(path) as container:
    if not container.streams.audio:
      raise MediaError(f"{path}: has no audio stream")
    stream = container.streams.audio[0]
    rate = stream.rate or stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=rate)
    chunks = []
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray())
      for out in resampler.resample(None):  # flush
        chunks.append(out.to_ndarray())
    except (av.error.FFmpegError, ValueError) as e:
      raise MediaError(f"{path}: its audio does not decode ({e})") from None
  if not chunks:
    raise MediaError(f"{path}: its audio stream holds no samples")
  return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), int(rate)


def _scaled_size(width: int, height: int) -> tuple[int, int]:
  if width <= height:
    return SHORT_SIDE, max(SHORT_SIDE, int(round(height * SHORT_SIDE / width)))
  return max(SHORT_SIDE, int(round(width * SHORT_SIDE / height))), SHORT_SIDE


def _video_stream(container, path: str):  # noqa: ANN001, ANN202
  """The first real video stream: embedded cover art (an mp3's or m4a's picture) is not a video."""
  from av.stream import Disposition  # deferred: PyAV, the [extract] extra, only to decode media

  streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
  if not streams:
    what = "only a still picture (cover art)" if container.streams.video else "no video stream"
    raise MediaError(f"{path}: has {what}; for music only, pass --modalities=music")
  return streams[0]


def read_frames(path: str) -> np.ndarray:
  """(T, 256, 256, 3) uint8 RGB frames at 30 per second (at each instant, the decoded frame then showing), short
  side scaled to 256 (bilinear) and centre-cropped. Resampled while decoding: about 6 MB per second of video.

  Raises:
    MediaError: no video stream (or only cover art), a stream that does not decode, or fewer than 2 frames.
  """
  import av  # deferred: PyAV, the [extract] extra, only to decode media

  with _open(path) as container:
    stream = _video_stream(container, path)
    out: list[np.ndarray] = []
    previous, start, last, interval = None, None, 0.0, None
    try:
      for frame in container.decode(stream):
        if frame.time is None:
          continue
        start = frame.time if start is None else start
        last = frame.time - start
        while previous is not None and len(out) / FPS < last - 1e-6:  # the instants before it show the previous
          out.append(previous)
        interval = last if interval is None and last > 0 else interval
        width, height = _scaled_size(frame.width, frame.height)
        rgb = frame.reformat(width=width, height=height, format="rgb24", interpolation="BILINEAR").to_ndarray()
        top, left = (height - CROP) // 2, (width - CROP) // 2
        previous = rgb[top : top + CROP, left : left + CROP]
    except (av.error.FFmpegError, ValueError) as e:
      raise MediaError(f"{path}: its video does not decode ({e})") from None
  if previous is None or interval is None:
    raise MediaError(f"{path}: its video holds fewer than 2 frames")
  while len(out) / FPS < last + interval - 1e-6:  # the last frame shows for one frame interval
    out.append(previous)
  return np.stack(out)


def clip_indices(num_frames: int) -> np.ndarray:
  """(C, 32) frame indices of the fast pathway's clips: every whole 64-frame window, every 2nd frame; a segment
  shorter than one window is one clip of 32 frames spread over it."""
  if num_frames >= WINDOW:
    starts = range(0, num_frames - WINDOW + 1, WINDOW)
    return np.stack([np.arange(s, s + WINDOW, FRAME_STRIDE) for s in starts])
  return np.round(np.linspace(0, num_frames - 1, FAST_FRAMES)).astype(int)[None]


SLOW_INDEX = np.linspace(0, FAST_FRAMES - 1, FAST_FRAMES // ALPHA).astype(int)  # PyTorchVideo's PackPathway


def slowfast_clips(frames: np.ndarray, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(slow (C, 8, 256, 256, 3), fast (C, 32, 256, 256, 3)) normalised float32 clips of a segment's frames (the
  clips of `indices`, a slice of `clip_indices`, to build a few at a time)."""
  indices = clip_indices(len(frames)) if indices is None else indices
  fast = (frames[indices].astype(np.float32) / 255.0 - MEAN) / STD
  return fast[:, SLOW_INDEX], fast
