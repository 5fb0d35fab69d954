"""Audio and video files in, EmoMV-compatible feature files out: what `emvgan-extract` runs.

For each file: the SlowFast-R50 vector of its video (2304 values) and the VGGish vector of its audio (128),
extracted as docs/data.md describes ("Extracting features from your own clips"), written in the layout of
EmoMV's retrieval folders:
  SlowFast_<name>.h5 (dataset `default`, N x 2304), VGGish_<name>.h5 (dataset `data`, N x 128),
  <name>_files.csv (row, name, file, clips, patches), and with labels (a CSV of `name,emotion` rows)
  <name>.csv in EmoMV's 4-column retrieval layout, so that `emvgan-retrieve --gallery_csv=<name>.csv
  --gallery_video_h5=... --gallery_music_h5=...` searches the clips. A row's name is its file name without the
  extension. Every output is written beside its target and renamed: all of them appear, or none.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import h5py
import jax
import numpy as np

import emvgan_jax
from emvgan_jax import atomic, errors
from emvgan_jax.extraction import audio, media, slowfast, vggish
from emvgan_jax.extraction import weights as weights_lib
from tfds_emomv.emomv import files

MEDIA_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mp3", ".wav", ".flac", ".m4a", ".ogg", ".aac")
MODALITIES = ("video", "music")


def media_files(inputs: Sequence[str]) -> list[str]:
  """The files of `inputs`, folders expanded to their media files (sorted), in order.

  Raises:
    errors.UsageError: an input that does not exist, a folder without media, or two files of one name.
  """
  out = []
  for item in inputs:
    item = os.path.expanduser(item)
    if os.path.isdir(item):
      found = sorted(os.path.join(item, n) for n in os.listdir(item) if n.lower().endswith(MEDIA_SUFFIXES))
      if not found:
        raise errors.UsageError(f"--inputs: {item} holds no media files ({', '.join(MEDIA_SUFFIXES)})")
      out += found
    elif os.path.isfile(item):
      out.append(item)
    else:
      raise errors.UsageError(f"--inputs: {item} does not exist")
  names = [os.path.splitext(os.path.basename(p))[0] for p in out]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise errors.UsageError(f"--inputs: two files share the name {repeated[0]!r}; rows are named by file name")
  return out


_PATCH_BATCH = 64  # VGGish patches per forward pass (a file's last batch is padded: one compiled shape)


class Extractor:
  """The two networks with their weights, jitted; `video(path)` and `music(path)` give one row each."""

  def __init__(self, modalities: Sequence[str], weights: str, weights_dir: str | None, clip_batch: int = 2):
    self.clip_batch = clip_batch
    # What made each modality's features, written into its HDF5 file's attributes (readers refuse random ones).
    self.marks: dict[str, dict[str, str]] = {}
    variables, missing = {}, []
    for modality, model in (("music", "vggish"), ("video", "slowfast")):  # every missing file named at once
      if modality in modalities:
        try:
          variables[model] = weights_lib.variables_for(model, weights, weights_dir)
        except weights_lib.WeightsError as e:
          missing.append(str(e))
    if missing:
      raise weights_lib.WeightsError(" | ".join(missing))
    if "music" in modalities:
      self._vggish_vars = variables["vggish"]
      self._vggish = jax.jit(vggish.VGGish().apply)
      recipe = {
        "sample_rate": audio.SAMPLE_RATE,
        "mel_bins": audio.NUM_MEL_BINS,
        "patch_seconds": audio.EXAMPLE_SECONDS,
      }
      self.marks["music"] = _marks("VGGish", weights, self._vggish_vars, {**recipe, "pooling": "mean over patches"})
    if "video" in modalities:
      self._slowfast_vars = variables["slowfast"]
      self._slowfast = jax.jit(slowfast.SlowFast().apply)
      recipe = {"fps": media.FPS, "short_side": media.SHORT_SIDE, "crop": media.CROP, "clip_frames": media.WINDOW}
      self.marks["video"] = _marks("SlowFast", weights, self._slowfast_vars, {**recipe, "pooling": "mean over clips"})

  def music(self, path: str) -> tuple[np.ndarray, int]:
    """(128,) mean VGGish embedding of the file's audio over its 0.96 s patches, and the patch count."""
    waveform, rate = media.read_audio(path)
    try:
      examples = audio.waveform_to_examples(waveform, rate)
    except ValueError as e:
      raise media.MediaError(f"{path}: {e}") from None
    rows = []
    for i in range(0, len(examples), _PATCH_BATCH):
      batch = examples[i : i + _PATCH_BATCH]
      padded = np.concatenate([batch, np.zeros((_PATCH_BATCH - len(batch), *batch.shape[1:]), batch.dtype)])
      rows.append(np.asarray(self._vggish(self._vggish_vars, padded))[: len(batch)])  # one compiled shape
    return np.concatenate(rows).mean(axis=0), len(examples)

  def video(self, path: str) -> tuple[np.ndarray, int]:
    """(2304,) mean SlowFast vector of the file's video over its 2.13 s clips, and the clip count."""
    frames = media.read_frames(path)
    indices = media.clip_indices(len(frames))
    rows = []
    for i in range(0, len(indices), self.clip_batch):  # clips built a batch at a time (31 MB each as float32)
      batch = indices[i : i + self.clip_batch]
      pad = self.clip_batch - len(batch)  # one compiled shape for every batch
      s, f = media.slowfast_clips(frames, np.concatenate([batch, batch[:1].repeat(pad, 0)]))
      rows.append(np.asarray(self._slowfast(self._slowfast_vars, s, f))[: len(batch)])
    return np.concatenate(rows).mean(axis=0), len(indices)


def _marks(extractor: str, weights: str, variables: Any, recipe: dict[str, Any]) -> dict[str, str]:
  """The HDF5 attributes of a feature file: the extractor, its weights ('published' or 'random') and their
  SHA-256 (of every array, in key order), and the recipe's parameters (JSON)."""
  digest = hashlib.sha256()
  for path, leaf in sorted(
    jax.tree_util.tree_flatten_with_path(variables)[0], key=lambda kv: jax.tree_util.keystr(kv[0])
  ):
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return {
    "extractor": extractor,
    "weights": weights,
    "weights_sha256": digest.hexdigest(),
    "recipe": json.dumps(recipe, sort_keys=True),
    "made_by": f"emvgan-extract {emvgan_jax.__version__}",
  }


def read_labels(path: str, names: Sequence[str]) -> dict[str, int]:
  """{name: emotion id} from a CSV of `name,emotion` rows (a header row allowed), one for each of `names`."""
  labels = {}
  with open(os.path.expanduser(path), newline="", encoding="utf-8") as f:
    for i, row in enumerate(csv.reader(f), start=1):
      if i == 1 and [c.strip().lower() for c in row] == ["name", "emotion"]:  # a header row
        continue
      if len(row) != 2 or row[1].strip().lower() not in files.EMOTIONS:
        raise errors.UsageError(f"--labels={path}: row {i} must be name,emotion (one of {', '.join(files.EMOTIONS)})")
      labels[row[0].strip()] = files.EMOTIONS.index(row[1].strip().lower())
  missing = [n for n in names if n not in labels]
  if missing:
    raise errors.UsageError(f"--labels={path} has no row for {missing[0]!r} ({len(missing)} names without a label)")
  return labels


def extract(
  files_in: Sequence[str],
  out_dir: str,
  *,
  name: str = "clips",
  modalities: Sequence[str] = MODALITIES,
  labels: str | None = None,
  weights: str = "published",
  weights_dir: str | None = None,
  clip_batch: int = 2,
) -> dict[str, str]:
  """Extracts every file and writes the feature files (all of them, or none: written beside, then renamed).

  Returns:
    {what: path} of the files written.
  """
  bad = [m for m in modalities if m not in MODALITIES]
  if bad or not modalities:
    raise errors.UsageError(f"--modalities must be video, music or both, got {','.join(modalities)}")
  names = [os.path.splitext(os.path.basename(p))[0] for p in files_in]
  label_ids = read_labels(labels, names) if labels else None
  extractor = Extractor(modalities, weights, weights_dir, clip_batch)
  rows = {m: [] for m in modalities}
  counts = []
  for i, path in enumerate(files_in):
    done = {m: getattr(extractor, m)(path) for m in modalities}
    for m, (vector, _) in done.items():
      rows[m].append(vector)
    counts.append({m: n for m, (_, n) in done.items()})
    print(f"[{i + 1}/{len(files_in)}] {path}: " + ", ".join(f"{m} from {n}" for m, n in counts[-1].items()), flush=True)
  os.makedirs(out_dir, exist_ok=True)
  # HDF5 fails badly on a failed write: the space is checked first (the arrays, each file's overhead, the CSVs).
  arrays = sum(np.stack(r).nbytes for r in rows.values())
  atomic.reserve(out_dir, arrays + len(rows) * atomic.HDF5_OVERHEAD + 1024 * (len(names) + 1))
  outputs = {}
  with contextlib.ExitStack() as stack:  # every file renamed into place at the end, or none (atomic.replacing)
    for m, (prefix, key) in (("video", ("SlowFast", "default")), ("music", ("VGGish", "data"))):
      if m in rows:
        outputs[m] = os.path.join(out_dir, f"{prefix}_{name}.h5")
        with h5py.File(stack.enter_context(atomic.replacing(outputs[m])), "w") as f:
          f.create_dataset(key, data=np.stack(rows[m]).astype(np.float32))
          f.attrs.update(extractor.marks[m])
    outputs["files"] = os.path.join(out_dir, f"{name}_files.csv")
    with open(stack.enter_context(atomic.replacing(outputs["files"])), "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["row", "name", "file", "video_clips", "music_patches"])
      for i, (n, p, c) in enumerate(zip(names, files_in, counts)):
        writer.writerow([i, n, os.path.abspath(p), c.get("video", ""), c.get("music", "")])
    if label_ids is not None:
      outputs["gallery"] = os.path.join(out_dir, f"{name}.csv")
      with open(stack.enter_context(atomic.replacing(outputs["gallery"])), "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[out_dir, n, files.EMOTIONS[label_ids[n]], label_ids[n]] for n in names])
  return outputs
