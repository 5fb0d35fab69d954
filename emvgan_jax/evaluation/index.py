"""A gallery embedded once and saved as an index, so that a search does not embed it again (`emvgan-index`).

Embedding a large gallery is the slow part of a search; `emvgan-retrieve --index=DIR` loads the saved vectors
instead. DIR holds:

  embeddings.npy   (N, d) float32, one unit-norm common-space vector per gallery item, in gallery row order;
                   for a model with an emotion head, `affect.gallery_rows` (the vector, its emotion
                   probabilities and a padding coordinate: d + K + 1 wide), which serves every emotion weight
  names.npy        (N,) item names;  emotions.npy  (N,) emotion ids
  index.json       the modality, the model (its checkpoint's kind and step, and a SHA-256 of its parameters),
                   the gallery's source, the sizes, and the SHA-256 of the three files

`read_index` refuses an index made by another checkpoint or of the other modality, and one whose vectors do not
match their checksum: vectors of another model would rank wrongly without any sign of it. DIR is written in a
temporary folder beside it and renamed into place, so it is whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np

from emvgan_jax import atomic, errors
from emvgan_jax.data import digest
from emvgan_jax.evaluation import retrieval
from emvgan_jax.runtime import restore

MODALITIES = ("video", "music")
FILES = ("embeddings.npy", "names.npy", "emotions.npy")
FORMAT_VERSION = 2  # 2: rows of `affect.gallery_rows` for models with an emotion head
READABLE_VERSIONS = (1, 2)


def params_fingerprint(run: restore.Run) -> str:
  """SHA-256 of the run's parameters (every leaf's bytes, in tree order): which model made a set of vectors."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(run.state.params):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()


def write_index(
  run: restore.Run, gallery: retrieval.Gallery, modality: str, out: str, *, batch_size: int = 4096
) -> dict:
  """Embeds `gallery`'s `modality` with `run` and writes the index folder `out`; returns its index.json."""
  if os.path.exists(out):
    raise errors.UsageError(f"--out {out} already exists; give a new folder (an index is never overwritten)")
  retrieval.check_retrieval_model(run)
  raw = getattr(gallery, modality)
  x = retrieval.standardize(run, modality, raw, f"the {gallery.source}")
  vectors = retrieval.embed_for_search(run, modality, x, batch_size=batch_size)
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  with atomic.replacing(out) as tmp:  # the folder appears whole under its name, or not at all
    os.makedirs(tmp)
    np.save(os.path.join(tmp, "embeddings.npy"), vectors.astype(np.float32))
    np.save(os.path.join(tmp, "names.npy"), np.asarray(gallery.name, str))
    np.save(os.path.join(tmp, "emotions.npy"), np.asarray(gallery.emotion, np.int64))
    meta = {
      "format_version": FORMAT_VERSION,
      "modality": modality,
      "count": int(vectors.shape[0]),
      "dim": int(vectors.shape[1]),
      "checkpoint_kind": run.kind,
      "checkpoint_step": int(run.step),
      "model": run.family.description,
      "params_sha256": params_fingerprint(run),
      "emotion_rows": run.family.emotion_probabilities is not None,  # affect.gallery_rows, else unit vectors
      "source": gallery.source,
      "sha256": {name: digest.file_sha256(os.path.join(tmp, name)) for name in FILES},
    }
    with open(os.path.join(tmp, "index.json"), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=1)
  return meta


def read_index(path: str, run: restore.Run, modality: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
  """(index.json, embeddings, names, emotions) of the index folder `path`, checked against `run` and `modality`.

  Raises:
    errors.Error: no index there, another modality, another checkpoint, or vectors that fail their checksum.
  """
  meta_path = os.path.join(path, "index.json")
  if not os.path.isfile(meta_path):
    raise errors.Error(f"--index {path} has no index.json; make one with emvgan-index")
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    missing = [k for k in ("modality", "count", "dim", "params_sha256", "sha256", "source", "model") if k not in meta]
  except (OSError, ValueError, TypeError) as e:
    raise errors.Error(f"--index {path}: index.json cannot be read ({e}); rebuild the index") from None
  if missing:
    raise errors.Error(f"--index {path}: index.json lacks {', '.join(missing)}; rebuild the index")
  if meta.get("format_version") not in READABLE_VERSIONS:
    raise errors.Error(f"--index {path}: format version {meta.get('format_version')}, expected {FORMAT_VERSION}")
  if meta["modality"] != modality:
    raise errors.Error(
      f"--index {path} holds {meta['modality']} embeddings, but this direction searches {modality}; "
      "use the other --direction or an index of the other modality"
    )
  if meta["params_sha256"] != params_fingerprint(run):
    raise errors.Error(
      f"--index {path} was made by {meta['model']} at step {meta['checkpoint_step']}, not by this run's "
      f"{run.family.description} at step {run.step}: its vectors would rank wrongly; rebuild it"
    )
  for name in FILES:
    file = os.path.join(path, name)
    if not os.path.isfile(file) or digest.file_sha256(file) != meta["sha256"].get(name):
      raise errors.Error(f"--index {path}: {name} is missing or damaged (checksum); rebuild the index")
  vectors = np.load(os.path.join(path, "embeddings.npy"), allow_pickle=False)
  names = np.load(os.path.join(path, "names.npy"), allow_pickle=False)
  emotions = np.load(os.path.join(path, "emotions.npy"), allow_pickle=False)
  if vectors.shape != (meta["count"], meta["dim"]) or len(names) != meta["count"] or len(emotions) != meta["count"]:
    raise errors.Error(f"--index {path}: its files disagree on the number of items; rebuild the index")
  return meta, vectors, names, emotions


def read_gallery(path: str, run: restore.Run, modality: str) -> tuple[retrieval.Gallery, np.ndarray]:
  """The gallery items of an index folder (names and emotions, no features) and its `modality` vectors."""
  meta, vectors, names, emotions = read_index(path, run, modality)
  source = f"index of the {meta['source']}"
  return retrieval.Gallery(name=names, emotion=emotions, video=None, music=None, source=source), vectors
