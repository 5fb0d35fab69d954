"""Cross-modal retrieval with a trained run: "which music fits this video?" (and back), what `emvgan-retrieve` runs.

A query is a gallery item (its video, or its music) or raw feature rows of the query's modality; the gallery is a
dataset's `gallery` split (TFDS) or a user's files in the EmoMV retrieval layout (a CSV of `dir, name, emotion,
label_id` or `dir, filename.mp4, label_id` rows; row i of each HDF5 file is CSV row i), or an index embedded once
(`evaluation/index.py`). Raw features are standardised with the run's train-split statistics before they are
embedded, and the search is exact (`search.GalleryIndex`, sharded over the devices).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os

import numpy as np

from emvgan_jax import config_lib, errors
from emvgan_jax.data import emomv
from emvgan_jax.evaluation import affect, metrics, search
from emvgan_jax.runtime import restore
from tfds_emomv.emomv import files

DIRECTIONS = metrics.DIRECTIONS


@dataclasses.dataclass
class Gallery:
  """Gallery items with their raw (unstandardised) features; row i of every array is item i."""

  name: np.ndarray
  emotion: np.ndarray
  video: np.ndarray | None  # None for a gallery read from an index (`emvgan_jax.tools.index`)
  music: np.ndarray | None
  source: str  # for messages, e.g. 'emomv/c gallery' or a CSV path

  def __len__(self) -> int:
    return len(self.name)


@dataclasses.dataclass
class Hit:
  rank: int
  index: int
  name: str
  score: float  # (1 - w) cosine + w emotion agreement (`affect.similarity`): the cosine at emotion weight 0
  emotion: str


def modalities(direction: str) -> tuple[str, str]:
  """(query modality, gallery modality) of a direction such as 'video_to_music'."""
  if direction not in DIRECTIONS:
    raise errors.UsageError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")
  query, target = direction.split("_to_")
  return query, target


def load_gallery(
  run: restore.Run,
  *,
  dataset: str | None = None,
  csv: str | None = None,
  video_h5: str | None = None,
  music_h5: str | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> Gallery:
  """The gallery to search: a user's CSV + HDF5 files when given, else the TFDS `gallery` split of a dataset."""
  own = [csv, video_h5, music_h5]
  if any(own):
    if not all(own):
      raise errors.Error(
        "a gallery of your own needs all three of --gallery_csv, --gallery_video_h5 and --gallery_music_h5"
      )
    arrays = files.read_gallery(csv, video_h5, music_h5, video_dim=None, music_dim=None)
    return Gallery(
      name=np.asarray(arrays["name"], str),
      emotion=np.asarray(arrays["video_emotion"]),
      video=arrays["video"],
      music=arrays["music"],
      source=csv,
    )
  config = config_lib.with_data(run.config, dataset=dataset, data_dir=data_dir, manual_dir=manual_dir)
  try:
    g = emomv.load_gallery(config)
  except emomv.DataError as e:
    raise errors.Error(f"{e}; pass your own with --gallery_csv, --gallery_video_h5 and --gallery_music_h5") from None
  return Gallery(
    name=np.asarray(g.name, str),
    emotion=np.asarray(g.video_emotion),
    video=g.video,
    music=g.music,
    source=f"{config.data.dataset} gallery",
  )


def standardize(run: restore.Run, modality: str, x: np.ndarray, what: str) -> np.ndarray:
  """Raw features of `modality` standardised with the run's statistics (`restore.check_features`); a wrong width or a
  non-finite value is a ToolError."""
  try:
    x = restore.check_features(run, modality, x, what, other_modality_hint=": use the other --direction")
  except ValueError as e:
    raise errors.Error(str(e)) from None
  return run.standardizer.transform(modality, x)


def check_retrieval_model(run: restore.Run) -> None:
  """A ToolError unless the run's model embeds both modalities in one space."""
  if not run.family.has_retrieval:
    raise errors.Error(
      f"{run.family.description} is a classification model without a retrieval embedding "
      "space; use an EMVGAN or retrieval-baseline run"
    )


def find_query(gallery: Gallery, name: str) -> int:
  """The row of gallery item `name`; an unknown name is a ToolError suggesting close names."""
  rows = np.flatnonzero(gallery.name == name)
  if rows.size:
    return int(rows[0])
  close = difflib.get_close_matches(name, gallery.name.tolist(), n=5, cutoff=0.5)
  hint = (
    f"did you mean {', '.join(repr(c) for c in close)}?"
    if close
    else (f"names look like {', '.join(repr(n) for n in gallery.name[:3].tolist())}")
  )
  raise errors.Error(f"no item named {name!r} in the {gallery.source} ({len(gallery)} items); {hint}")


def read_query_features(
  *, query_file: str | None = None, query_h5: str | None = None, query_row: int | None = None
) -> np.ndarray:
  """Raw query features from a .npy file or one row of an HDF5 file, as (N, D)."""
  if query_file:
    if not os.path.isfile(query_file):
      raise errors.UsageError(f"--query_file {query_file} does not exist")
    try:
      x = np.load(query_file, allow_pickle=False)
    except ValueError as e:
      raise errors.UsageError(f"--query_file {query_file} is not a numpy .npy array ({e})") from e
    x = np.asarray(x, np.float32)
    return x[None, :] if x.ndim == 1 else x
  features = files.read_features(query_h5)
  if query_row is None or not 0 <= query_row < len(features):
    raise errors.UsageError(f"--query_row must be a row of {query_h5}, 0 to {len(features) - 1}, got {query_row}")
  return features[query_row : query_row + 1]


def emotion_weight_of(run: restore.Run, given: float | None) -> float:
  """The emotion weight a search ranks by: `given`, else the run's own (its results.json), else 0.

  Raises:
    errors.UsageError: `given` is outside [0, 1], or above 0 for a model without an emotion head.
  """
  if given is not None:
    weight = affect.check_weight(given)
    if weight > 0 and run.family.emotion_probabilities is None:
      raise errors.UsageError(
        f"--emotion_weight={given}: {run.family.description} has no emotion head; it ranks by cosine only (0)"
      )
    return weight
  if run.family.emotion_probabilities is None or not run.workdir:
    return 0.0
  return affect.run_weight(run.workdir)[0]


def embed_for_search(
  run: restore.Run, modality: str, x: np.ndarray, *, weight: float | None = None, batch_size: int = 4096
) -> np.ndarray:
  """Standardised `modality` rows as a search holds them: common-space vectors, or for a model with an emotion
  head `affect.gallery_rows` (`weight` None) or `affect.query_rows` at `weight` (a query)."""
  embed = run.family.embed_video if modality == "video" else run.family.embed_music
  z = search.embed_rows(embed, run.state, x, batch_size=batch_size)
  if run.family.emotion_probabilities is None:
    return z
  p = search.embed_rows(run.family.emotion_probabilities, run.state, z, batch_size=batch_size)
  return affect.gallery_rows(z, p) if weight is None else affect.query_rows(z, p, weight)


def retrieve(
  run: restore.Run,
  gallery: Gallery,
  direction: str,
  *,
  query: str | None = None,
  query_features: np.ndarray | None = None,
  k: int = 10,
  chunk_size: int = search.DEFAULT_CHUNK_SIZE,
  batch_size: int = 4096,
  gallery_vectors: np.ndarray | None = None,
  scores: str = "float32",
  emotion_weight: float | None = None,
) -> tuple[list[list[Hit]], list[str]]:
  """Top-k gallery items of the target modality for each query.

  Args:
    run: a restored `runtime.restore.Run` of a retrieval model.
    gallery: the gallery (raw features).
    direction: 'video_to_music' or 'music_to_video'.
    query: a gallery item's name (its query-modality features are the query), or
    query_features: raw (N, D) features of the query modality.
    k: items per query.
    chunk_size: gallery rows per search step.
    batch_size: rows per embedding call.
    gallery_vectors: the gallery's target-modality embeddings, already made (`emvgan_jax.tools.index`); the
      gallery's features are then not needed.
    scores: the index's score dtype, 'float32' or 'bfloat16' (`search.GalleryIndex`).
    emotion_weight: rank by (1 - w) cosine + w emotion agreement (`evaluation/affect.py`); None: the run's own.

  Returns:
    `(hits, labels)`: per query, its hits best first; and a label per query for printing.
  """
  check_retrieval_model(run)
  q_mod, g_mod = modalities(direction)
  weight = emotion_weight_of(run, emotion_weight)
  if (query is None) == (query_features is None):
    raise errors.UsageError("give exactly one query: --query=NAME, --query_file=x.npy, or --query_h5 with --query_row")
  if query is not None:
    if getattr(gallery, q_mod) is None:
      raise errors.UsageError(
        f"--query=NAME needs the gallery's {q_mod} features, which an index does not hold; give the query as "
        "--query_file or --query_h5, or search without --index"
      )
    row = find_query(gallery, query)
    raw = getattr(gallery, q_mod)[row : row + 1]
    labels = [f"{q_mod} of {query} ({files.EMOTIONS[int(gallery.emotion[row])]})"]
  else:
    raw = np.asarray(query_features, np.float32)
    labels = [f"{q_mod} features #{i}" for i in range(len(raw))] if len(raw) > 1 else [f"{q_mod} features"]
  q = standardize(run, q_mod, raw, "the query")
  queries = embed_for_search(run, q_mod, q, weight=weight, batch_size=batch_size)
  if gallery_vectors is None:
    g = standardize(run, g_mod, getattr(gallery, g_mod), f"the {gallery.source}")
    gallery_vectors = embed_for_search(run, g_mod, g, batch_size=batch_size)
  if gallery_vectors.shape[1] != queries.shape[1]:
    raise errors.Error(
      f"the gallery's vectors are {gallery_vectors.shape[1]} wide, the queries' {queries.shape[1]}: an index made "
      "before emotion-aware ranking; rebuild it with emvgan-index"
    )
  index = search.GalleryIndex(gallery_vectors, mesh=run.mesh, chunk_size=chunk_size, scores=scores)
  found, indices = index.search(queries, k)  # cosines of the searched vectors
  if run.family.emotion_probabilities is not None:  # the cosine of the padded vectors back to s_w
    found = affect.score(found, queries)
  if index.fallbacks:
    logging.info("bfloat16 search: %d of %d queries had near-ties, searched exactly", index.fallbacks, len(queries))
  hits = [
    [
      Hit(
        rank=r + 1,
        index=int(i),
        name=str(gallery.name[i]),
        score=float(s),
        emotion=files.EMOTIONS[int(gallery.emotion[i])],
      )
      for r, (s, i) in enumerate(zip(row_scores, row_indices))
    ]
    for row_scores, row_indices in zip(found, indices)
  ]
  return hits, labels


def format_hits(
  hits: list[Hit], label: str, direction: str, source: str, size: int, *, emotion_weight: float = 0.0
) -> str:
  """A readable table of one query's hits (ranked at `emotion_weight`)."""
  _, g_mod = modalities(direction)
  width = max([len("name")] + [len(h.name) for h in hits])
  ranked = "" if emotion_weight == 0 else f", by {1 - emotion_weight:g} cosine + {emotion_weight:g} emotion agreement"
  lines = [
    f"Top {len(hits)} {g_mod} of the {source} ({size} items) for the {label}{ranked}:",
    f"{'rank':>4}  {'name':<{width}}  {'cosine' if emotion_weight == 0 else 'score':>7}  emotion",
  ]
  lines += [f"{h.rank:>4}  {h.name:<{width}}  {h.score:>7.4f}  {h.emotion}" for h in hits]
  return "\n".join(lines)
