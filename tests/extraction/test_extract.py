"""Feature extraction (`emvgan-extract`): the log-mel front end and both converters against the
reference implementations (torchvggish, PyTorchVideo; skipped where the `extract` and `reference` extras are not
installed), media decoding and clip sampling on media files generated here, and the command end to end with
random weights: shapes, determinism, the pooling over patches and clips, and a search over the result."""

import csv
import json
import os
import sys
import types

import h5py
import helpers
import jax
import numpy as np
import pytest

from emvgan_jax import errors
from emvgan_jax.extraction import audio, pipeline, slowfast, vggish
from emvgan_jax.extraction import weights as weights_lib

av = pytest.importorskip("av", reason="PyAV decodes the media (pip install -e '.[test]')")


def _reference(module: str):
  """The reference implementation, or a skip saying how to install it. PyTorchVideo imports torchvision for
  its detection heads only (RoIAlign): that import is stood in for, since torchvision does not install beside
  this machine's CPU build of PyTorch."""
  pytest.importorskip("torch", reason="needs pip install -e '.[extract,reference]'")
  if module == "pytorchvideo" and "torchvision" not in sys.modules:
    try:
      import torchvision  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
      ops.RoIAlign = object
      stub.ops = ops
      sys.modules.update({"torchvision": stub, "torchvision.ops": ops})
  return pytest.importorskip(module, reason="needs pip install -e '.[extract,reference]'")


# --- the front end and the converters -----------------------------------------------------------------------


@pytest.mark.slow
def test_log_mel_patches_equal_torchvggish_at_16khz():
  _reference("torchvggish")
  from torchvggish import vggish_input  # pylint: disable=g-import-not-at-top

  waveform = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 3 + 1234)
  ours = audio.waveform_to_examples(waveform, 16000)
  ref = vggish_input.waveform_to_examples(waveform, 16000, return_tensor=False)
  assert ours.shape == ref.shape == (3, 96, 64)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  # Other rates are resampled differently (scipy's polyphase filter, not resampy): close, not equal.
  noise = np.random.default_rng(1).uniform(-0.5, 0.5, 44100 * 3)
  difference = np.abs(audio.waveform_to_examples(noise, 44100) - vggish_input.waveform_to_examples(noise, 44100, False))
  assert difference.mean() < 0.02


def test_log_mel_patches_by_hand():
  assert audio.mel_matrix(257).shape == (257, 64) and np.all(audio.mel_matrix(257)[0] == 0)
  # 1 s at 16 kHz: 98 frames of 25 ms every 10 ms, one patch of 96; a 0.5 s file is refused.
  assert audio.waveform_to_examples(np.zeros(16000), 16000).shape == (1, 96, 64)
  assert np.allclose(audio.waveform_to_examples(np.zeros(16000), 16000), np.log(0.01))
  with pytest.raises(ValueError, match="shorter than one VGGish patch"):
    audio.waveform_to_examples(np.zeros(8000), 16000)
  stereo = np.random.default_rng(1).normal(size=(32000, 2)) * 0.1
  np.testing.assert_array_equal(
    audio.waveform_to_examples(stereo, 16000), audio.waveform_to_examples(stereo.mean(1), 16000)
  )


@pytest.mark.slow
def test_vggish_converter_reproduces_torchvggish():
  torch = _reference("torch")
  _reference("torchvggish")
  from torchvggish import torchvggish as reference  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  model = reference._vgg(postprocess=False).eval()  # pylint: disable=protected-access  (the net, no download)
  variables = vggish.convert({k: v.numpy() for k, v in model.state_dict().items()})
  x = np.random.default_rng(2).normal(size=(3, 96, 64)).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(x[:, None])).numpy()
  got = np.asarray(jax.jit(vggish.VGGish().apply)(variables, x))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert got.shape == (3, 128) and got.min() >= 0  # the ReLU'd embedding, as EmoMV's vectors


@pytest.mark.slow
def test_slowfast_converter_reproduces_pytorchvideo():
  torch = _reference("torch")
  _reference("pytorchvideo")
  from pytorchvideo.models import slowfast as reference  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  model = reference.create_slowfast(model_num_class=400).eval()
  with torch.no_grad():  # BatchNorm statistics and affine terms away from their defaults, so they are tested too
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm3d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  variables = slowfast.convert({k: v.numpy() for k, v in model.state_dict().items()})
  rng = np.random.default_rng(3)
  slow, fast = (
    rng.normal(size=(2, 3, 8, 64, 64)).astype(np.float32),
    rng.normal(size=(2, 3, 32, 64, 64)).astype(np.float32),
  )
  with torch.no_grad():
    x = [torch.from_numpy(slow), torch.from_numpy(fast)]
    for block in model.blocks[:5]:  # stem, four stages (the head's 7x7 pool needs 224 input: pooled by hand)
      x = block(x)
    want = torch.cat([x[0].mean(dim=(2, 3, 4)), x[1].mean(dim=(2, 3, 4))], 1).numpy()
  apply = jax.jit(slowfast.SlowFast().apply)  # one program, not one per layer run op by op
  got = np.asarray(apply(variables, slow.transpose(0, 2, 3, 4, 1), fast.transpose(0, 2, 3, 4, 1)))
  assert got.shape == (2, slowfast.FEATURE_DIM) == (2, 2304)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_state_dict_of_another_shape_is_refused_naming_the_layer():
  state = {"features.0.weight": np.zeros((64, 1, 3, 3)), "features.0.bias": np.zeros(64)}
  with pytest.raises(ValueError, match="the weights do not fit VGGish: missing params/embeddings_0/bias"):
    vggish.convert(state)
  state = {"features.0.weight": np.zeros((32, 1, 3, 3)), "features.0.bias": np.zeros(32)}
  with pytest.raises(ValueError, match=r"params/features_0/kernel: \(3, 3, 1, 32\) instead of \(3, 3, 1, 64\)"):
    vggish.convert(state)


def test_published_weights_offline_are_one_clear_error(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise OSError("network unreachable")

  monkeypatch.setattr(weights_lib.urllib.request, "urlopen", offline)
  with pytest.raises(weights_lib.WeightsError, match=r"cannot fetch the published vggish weights from https://github"):
    weights_lib.published_variables("vggish", str(tmp_path))
  assert not list(tmp_path.iterdir())  # nothing half-downloaded
  # Both extractors' files are named in one error, not one per try.
  with pytest.raises(weights_lib.WeightsError) as e:
    pipeline.Extractor(["video", "music"], "published", str(tmp_path))
  assert weights_lib.SOURCES["vggish"] in str(e.value) and weights_lib.SOURCES["slowfast"] in str(e.value)
  assert "SHA-256 10086976..." in str(e.value) and "no published SHA-256, checked by loading it" in str(e.value)


def test_a_weights_file_put_in_place_by_hand_is_checked_too(tmp_path):
  (tmp_path / "vggish-10086976.pth").write_bytes(b"not the published file")
  expected = r"vggish-10086976.pth has SHA-256 [0-9a-f]{8}\.\.\., expected 10086976"
  with pytest.raises(weights_lib.WeightsError, match=expected):
    weights_lib.published_variables("vggish", str(tmp_path))
  assert (tmp_path / "vggish-10086976.pth").exists()  # the user's file is theirs to delete


@pytest.mark.slow
def test_converted_weights_are_read_back_from_the_cache(tmp_path):
  variables = weights_lib.random_variables("vggish", seed=5)
  np.savez(tmp_path / "vggish_flax.npz", **weights_lib._flat(variables))  # pylint: disable=protected-access
  again = weights_lib.published_variables("vggish", str(tmp_path))
  x = np.random.default_rng(0).normal(size=(2, 96, 64)).astype(np.float32)
  np.testing.assert_array_equal(vggish.VGGish().apply(again, x), vggish.VGGish().apply(variables, x))


# --- media ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_decoding_and_clip_sampling(tmp_path):
  from emvgan_jax.extraction import media  # pylint: disable=g-import-not-at-top

  path = helpers.write_media(tmp_path / "a.mp4", seconds=3.0, fps=25)
  waveform, rate = media.read_audio(path)
  assert rate == 22050 and abs(len(waveform) / rate - 3.0) < 0.1 and 0.25 < np.abs(waveform).max() < 0.35
  frames = media.read_frames(path)
  assert frames.shape == (90, 256, 256, 3) and frames.dtype == np.uint8  # 3 s at 30 per second, 256 crop
  assert media.clip_indices(90).tolist() == [list(range(0, 64, 2))]
  slow, fast = media.slowfast_clips(frames)  # one whole 64-frame window fits
  assert slow.shape == (1, 8, 256, 256, 3) and fast.shape == (1, 32, 256, 256, 3)
  np.testing.assert_array_equal(slow[0], fast[0][[0, 4, 8, 13, 17, 22, 26, 31]])  # linspace(0, 31, 8), as PyTorchVideo
  np.testing.assert_allclose(fast[0, 1], (frames[2] / 255.0 - 0.45) / 0.225, atol=1e-6)  # every 2nd frame
  short, _ = media.slowfast_clips(frames[:40])
  assert short.shape[0] == 1  # a segment shorter than a window: one clip spread over it
  assert media.slowfast_clips(np.concatenate([frames] * 3))[0].shape[0] == 4  # 270 frames: 4 whole windows
  silent = helpers.write_media(tmp_path / "v.mp4", seconds=1.0, audio_track=False)
  with pytest.raises(media.MediaError, match="has no audio stream"):
    media.read_audio(silent)
  still = helpers.write_media(tmp_path / "still.mp4", seconds=0.04, fps=25)  # one picture, like an mp3's cover art
  with pytest.raises(media.MediaError, match="fewer than 2 frames"):
    media.read_frames(still)
  (tmp_path / "junk.mp4").write_bytes(b"not a video")
  with pytest.raises(media.MediaError, match="cannot be opened as media"):
    media.read_frames(str(tmp_path / "junk.mp4"))


# --- the command ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
  from emvgan_jax.tools import extract  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("extract")
  clips = root / "clips"
  clips.mkdir()
  helpers.write_media(clips / "sunny.mp4", seconds=2.5, fps=30, tone=660.0)
  helpers.write_media(clips / "rainy.mp4", seconds=1.5, fps=24, tone=220.0)
  (root / "labels.csv").write_text("sunny,exciting\nrainy,sad\n")
  out = root / "out"
  argv = ["extract", f"--inputs={clips}", f"--out_dir={out}", "--weights=random", f"--labels={root / 'labels.csv'}"]
  argv.append("--clip_batch=1")  # each file is one clip: a batch of 2 would run a padding clip through SlowFast
  extract.main(argv)
  return types.SimpleNamespace(root=root, clips=clips, out=out, extract=extract)


@pytest.mark.slow
def test_extract_writes_the_emomv_layout(extracted):
  out = extracted.out
  with h5py.File(out / "SlowFast_clips.h5") as f:
    video = f["default"][()]
  with h5py.File(out / "VGGish_clips.h5") as f:
    music = f["data"][()]
  assert video.shape == (2, 2304) and music.shape == (2, 128) and video.dtype == music.dtype == np.float32
  assert np.all(np.isfinite(video)) and video.min() >= 0 and music.min() >= 0  # post-ReLU, as EmoMV's
  rows = list(csv.reader(open(out / "clips.csv")))
  assert rows == [[str(out), "rainy", "sad", "3"], [str(out), "sunny", "exciting", "0"]]  # sorted by file name
  index = list(csv.DictReader(open(out / "clips_files.csv")))
  assert [r["name"] for r in index] == ["rainy", "sunny"] and [r["music_patches"] for r in index] == ["1", "2"]
  assert not [p for p in os.listdir(out) if ".partial-" in p]


@pytest.mark.slow
def test_features_of_random_weights_say_so_and_are_refused_unless_allowed(extracted, monkeypatch):
  from tfds_emomv.emomv import files  # pylint: disable=g-import-not-at-top

  out = extracted.out
  with h5py.File(out / "VGGish_clips.h5") as f:
    marks = dict(f.attrs)
  assert marks["extractor"] == "VGGish" and marks["weights"] == "random" and len(marks["weights_sha256"]) == 64
  assert json.loads(marks["recipe"])["sample_rate"] == 16000 and marks["made_by"].startswith("emvgan-extract")
  with h5py.File(out / "SlowFast_clips.h5") as f:
    assert f.attrs["extractor"] == "SlowFast" and f.attrs["weights"] == "random"
  paths = (out / "clips.csv", out / "SlowFast_clips.h5", out / "VGGish_clips.h5")
  monkeypatch.setenv("EMVGAN_ALLOW_RANDOM_FEATURES", "0")
  with pytest.raises(files.EmoMVFormatError, match=r"SlowFast_clips\.h5: made by emvgan-extract with random .*"):
    files.read_gallery(*paths)
  monkeypatch.setenv("EMVGAN_ALLOW_RANDOM_FEATURES", "1")  # what --allow_random_features sets
  gallery = files.read_gallery(*paths)
  assert list(gallery["name"]) == ["rainy", "sunny"]  # what retrieve --gallery_csv reads


@pytest.mark.slow
def test_extract_pools_the_patches_and_is_deterministic(extracted):
  from emvgan_jax.extraction import media  # pylint: disable=g-import-not-at-top

  extractor = pipeline.Extractor(["music"], "random", None)
  path = str(extracted.clips / "sunny.mp4")
  vector, patches = extractor.music(path)
  waveform, rate = media.read_audio(path)
  per_patch = vggish.VGGish().apply(weights_lib.random_variables("vggish"), audio.waveform_to_examples(waveform, rate))
  assert patches == 2 and per_patch.shape == (2, 128)
  np.testing.assert_allclose(vector, np.asarray(per_patch).mean(axis=0), rtol=1e-4, atol=1e-6)  # jit vs not
  with h5py.File(extracted.out / "VGGish_clips.h5") as f:
    np.testing.assert_allclose(f["data"][1], vector, rtol=1e-6)  # the command's row for sunny: the same numbers


@pytest.mark.slow
def test_extracted_clips_are_a_gallery_for_retrieve(extracted, tiny_run, capsys):
  from emvgan_jax.tools import retrieve  # pylint: disable=g-import-not-at-top

  out = extracted.out
  argv = [f"--workdir={tiny_run.workdir}", "--direction=video_to_music", f"--query_h5={out / 'SlowFast_clips.h5'}"]
  argv += ["--query_row=0", f"--gallery_csv={out / 'clips.csv'}", f"--gallery_video_h5={out / 'SlowFast_clips.h5'}"]
  argv += [f"--gallery_music_h5={out / 'VGGish_clips.h5'}", "--k=2"]
  with pytest.raises(SystemExit):  # features of random weights: refused in one line
    retrieve.main(["retrieve", *argv])
  assert "made by emvgan-extract with random" in capsys.readouterr().err
  try:
    retrieve.main(["retrieve", *argv, "--allow_random_features"])
  finally:
    os.environ.pop("EMVGAN_ALLOW_RANDOM_FEATURES", None)  # the flag set it for the rest of the process
  printed = capsys.readouterr().out
  assert "rainy" in printed and "sunny" in printed


def test_extract_usage_errors(tmp_path):
  with pytest.raises(errors.UsageError, match="does not exist"):
    pipeline.media_files([str(tmp_path / "nope.mp4")])
  with pytest.raises(errors.UsageError, match="holds no media files"):
    pipeline.media_files([str(tmp_path)])
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  for d in ("a", "b"):
    (tmp_path / d / "x.wav").write_bytes(b"")
  with pytest.raises(errors.UsageError, match="two files share the name 'x'"):
    pipeline.media_files([str(tmp_path / "a"), str(tmp_path / "b")])
