"""VGGish's input: log-mel spectrogram patches of 0.96 s, exactly as the published VGGish code computes them.

A port to numpy of AudioSet's `vggish_input.waveform_to_examples` and `mel_features` (the same constants,
window, mel matrix and framing; `tests/extraction/test_extract.py` checks equality with torchvggish's copy where it is
installed). One difference: resampling to 16 kHz uses `scipy.signal.resample_poly` (a polyphase FIR), where the
reference uses resampy's band-limited sinc; audio that is already at 16 kHz is not resampled at all.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal

SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_SECONDS = 0.96  # one patch of 96 frames, and the hop between patches


def frame(data: np.ndarray, window: int, hop: int) -> np.ndarray:
  """(num_frames, window, ...) frames of `data` along axis 0, every `hop` samples; the tail that does not fill
  a frame is dropped (as the reference does)."""
  num_frames = 1 + (data.shape[0] - window) // hop
  if num_frames < 1:
    return np.zeros((0, window) + data.shape[1:], data.dtype)
  index = np.arange(window)[None, :] + hop * np.arange(num_frames)[:, None]
  return data[index]


def periodic_hann(window: int) -> np.ndarray:
  return 0.5 - 0.5 * np.cos(2 * np.pi / window * np.arange(window))


def hertz_to_mel(hertz: np.ndarray | float) -> np.ndarray:
  return 1127.0 * np.log(1.0 + np.asarray(hertz) / 700.0)


def mel_matrix(num_spectrogram_bins: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """(num_spectrogram_bins, NUM_MEL_BINS) triangular mel weights, the DC bin zeroed (as the reference)."""
  bins_mel = hertz_to_mel(np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins))
  edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
  weights = np.empty((num_spectrogram_bins, NUM_MEL_BINS))
  for i in range(NUM_MEL_BINS):
    lower, centre, upper = edges[i : i + 3]
    weights[:, i] = np.maximum(
      0.0, np.minimum((bins_mel - lower) / (centre - lower), (upper - bins_mel) / (upper - centre))
    )
  weights[0, :] = 0.0
  return weights


def log_mel_spectrogram(waveform: np.ndarray) -> np.ndarray:
  """(num_frames, 64) log mel energies of a 16 kHz mono waveform (25 ms Hann windows every 10 ms)."""
  window = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))
  hop = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))
  fft_length = 2 ** math.ceil(math.log2(window))
  frames = frame(np.asarray(waveform, np.float64), window, hop) * periodic_hann(window)
  spectrogram = np.abs(np.fft.rfft(frames, fft_length))
  return np.log(spectrogram @ mel_matrix(spectrogram.shape[1]) + LOG_OFFSET)


def resample(waveform: np.ndarray, rate: int) -> np.ndarray:
  """`waveform` at 16 kHz (unchanged when it already is)."""
  if rate == SAMPLE_RATE:
    return np.asarray(waveform, np.float64)

  g = math.gcd(int(rate), SAMPLE_RATE)
  return signal.resample_poly(np.asarray(waveform, np.float64), SAMPLE_RATE // g, int(rate) // g)


def waveform_to_examples(waveform: np.ndarray, rate: int) -> np.ndarray:
  """(num_examples, 96, 64) float32 log-mel patches of a waveform in [-1, 1] (channels last are averaged).

  Raises:
    ValueError: the audio is shorter than one patch (0.96 s).
  """
  waveform = np.asarray(waveform)
  if waveform.ndim > 1:
    waveform = waveform.mean(axis=1)
  log_mel = log_mel_spectrogram(resample(waveform, rate))
  patch = int(round(EXAMPLE_SECONDS / STFT_HOP_SECONDS))
  examples = frame(log_mel, patch, patch)
  if not len(examples):
    raise ValueError(f"{len(waveform) / rate:.2f} s of audio is shorter than one VGGish patch ({EXAMPLE_SECONDS} s)")
  return examples.astype(np.float32)
