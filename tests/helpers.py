"""What several test files share: the repository's root, running a command in-process, a PNG check, a batch.

Test files import this module (`import helpers`: pytest puts `tests/` on the path for conftest.py) and never
each other.
"""

import os
import pathlib

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# LLVM's optimisations off: the tests' programs compile in about 0.6 times the time and run as correctly (the HLO,
# its fusions and its collectives are the same; only the generated machine code is less optimised). conftest.py
# sets it for the test process; `subprocess_env` for the processes the tests start.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
  """The environment of a command a test starts: the CPU backend with `devices` fake devices (None: one) and the
  tests' fast compilation; `extra` sets or, with an empty value, keeps out more variables."""
  count = f" --xla_force_host_platform_device_count={devices}" if devices else ""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE + count}
  for key, value in extra.items():
    if value:
      env[key] = value
    else:
      env.pop(key, None)
  return env


def run_main(module, argv):
  """Runs a tool's `main` in-process; returns the SystemExit code (None: success), or the one line it printed for
  an error (`cli.Exit` keeps it)."""
  try:
    module.main([module.__name__] + argv)
  except SystemExit as e:
    return getattr(e, "message", e.code)
  return None


def assert_valid_png(path, min_kb=8, min_side=200):
  """The 8-byte PNG signature, a plausible size, and matplotlib reads it back as an image of sane dimensions."""
  import matplotlib.image  # only the tests that check a plot pay for matplotlib

  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE, path
  assert len(data) > min_kb * 1024, (path, len(data))
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[2] in (3, 4)
  assert min_side <= image.shape[0] <= 4000 and min_side <= image.shape[1] <= 6000, image.shape


def random_batch(n: int, dv: int = 12, dm: int = 7, seed: int = 0):
  """A batch of `n` random rows of widths `dv` and `dm`, its last 3 rows padding (mask False)."""
  rng = np.random.default_rng(seed)
  mask = np.ones(n, bool)
  mask[-3:] = False  # padding rows must count for nothing, sharded or not
  return {
    "video": rng.normal(size=(n, dv)).astype(np.float32),
    "music": rng.normal(size=(n, dm)).astype(np.float32),
    "match": (np.arange(n) % 2).astype(np.int32),
    "video_emotion": rng.integers(0, 5, n).astype(np.int32),
    "music_emotion": rng.integers(0, 5, n).astype(np.int32),
    "mask": mask,
  }


def write_media(path, *, seconds, fps=25, size=(96, 64), tone=440.0, rate=22050, video=True, audio_track=True):
  """A short file: a moving bar (mpeg4) and a stereo sine tone (aac), both through FFmpeg's own encoders (PyAV,
  which `.[test]` installs)."""
  import av  # pylint: disable=g-import-not-at-top  (only the tests that make media need it)

  container = av.open(str(path), "w")
  v = container.add_stream("mpeg4", rate=fps) if video else None
  if v is not None:
    v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
  a = container.add_stream("aac", rate=rate) if audio_track else None
  if a is not None:
    a.layout = "stereo"
  for i in range(int(seconds * fps) if video else 0):
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[:, (i * 3) % size[0] :] = (i * 7) % 255
    for packet in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
      container.mux(packet)
  if v is not None:
    for packet in v.encode():
      container.mux(packet)
  if a is not None:
    x = (0.3 * np.sin(2 * np.pi * tone * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    for s in range(0, len(x), 1024):
      frame = av.AudioFrame.from_ndarray(np.stack([x[s : s + 1024]] * 2), format="fltp", layout="stereo")
      frame.sample_rate, frame.pts = rate, s
      for packet in a.encode(frame):
        container.mux(packet)
    for packet in a.encode():
      container.mux(packet)
  container.close()
  return str(path)


def assert_results_close(got, want, path="", abs_tol=1e-6):
  """Recursive equality of two results dicts (nested dicts of numbers and strings), numbers within `abs_tol`."""
  if isinstance(want, dict):
    assert isinstance(got, dict) and sorted(got) == sorted(want), (path, sorted(got), sorted(want))
    for k in want:
      assert_results_close(got[k], want[k], f"{path}/{k}", abs_tol)
  elif isinstance(want, float) or isinstance(got, float):
    assert got == pytest.approx(want, abs=abs_tol, nan_ok=True), path
  else:
    assert got == want, path
