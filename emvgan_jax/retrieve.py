"""Cross-modal retrieval with a trained run: `python -m emvgan_jax.retrieve --workdir=W --direction=... --query=...`.

Prints the top-k gallery items (rank, name, cosine, emotion) for a query, searched exactly in the run's common
space. The query is one of:
  --query=NAME                     a gallery item: its video (video_to_music) or its music (music_to_video)
  --query_file=x.npy               your own raw feature vector(s), (D,) or (N, D), of the query's modality
  --query_h5=f.h5 --query_row=i    row i (0-based) of an HDF5 feature file in the EmoMV layout
The gallery is the run's dataset's `gallery` split (TFDS; `--dataset` picks another EmoMV set), or your own files
in the EmoMV retrieval layout: --gallery_csv=g.csv --gallery_video_h5=v.h5 --gallery_music_h5=m.h5 (a CSV of
`dir, name, emotion, label_id` or `dir, filename.mp4, label_id` rows; row i of each HDF5 file is CSV row i).

Raw features are standardised with the run's train-split statistics before they are embedded. The search is exact
(`emvgan_jax.search.GalleryIndex`): the gallery is sharded over the devices, each walks its shard in chunks of
--chunk_size rows with a running top k, and the devices' top k are merged, so a gallery of millions of items never
needs a full similarity row per query in memory at once. `--index=DIR` searches a gallery embedded once by
`python -m emvgan_jax.index` (queries then come from --query_file or --query_h5). `--scores=bfloat16` holds and
scores the gallery in bfloat16 on the devices and re-ranks the candidates exactly in float32, with the same
result (a query it cannot vouch for is searched again exactly); it pays on GPUs and TPUs, not on CPUs.

Usage:
  python -m emvgan_jax.retrieve --workdir=runs/emomv_c --direction=video_to_music --query=<gallery name> [--k=10]
"""

from __future__ import annotations

import dataclasses
import difflib
import os

import numpy as np
from absl import flags, logging

from emvgan_jax import api, config_lib, metrics, search
from emvgan_jax.data import emomv
from emvgan_jax.runtime import cli, restore
from tfds_emomv.emomv import files

HELP = __doc__
DIRECTIONS = metrics.DIRECTIONS

_FLAGS = cli.new_flag_values()
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.", flag_values=_FLAGS)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.", flag_values=_FLAGS)
_DIRECTION = flags.DEFINE_enum("direction", None, DIRECTIONS, "Query modality -> gallery modality.", flag_values=_FLAGS)
_QUERY = flags.DEFINE_string("query", None, "Name of a gallery item to use as the query.", flag_values=_FLAGS)
_QUERY_FILE = flags.DEFINE_string("query_file", None, ".npy of raw query features, (D,) or (N, D).", flag_values=_FLAGS)
_QUERY_H5 = flags.DEFINE_string(
  "query_h5", None, "HDF5 feature file holding the query (with --query_row).", flag_values=_FLAGS
)
_QUERY_ROW = flags.DEFINE_integer("query_row", None, "0-based row of --query_h5.", flag_values=_FLAGS)
_K = flags.DEFINE_integer("k", 10, "How many items to list.", lower_bound=1, flag_values=_FLAGS)
_CHUNK_SIZE = flags.DEFINE_integer(
  "chunk_size", search.DEFAULT_CHUNK_SIZE, "Gallery rows per search step.", lower_bound=1, flag_values=_FLAGS
)


def define_gallery_flags(flag_values: flags.FlagValues) -> dict[str, flags.FlagHolder]:
  """The flags that name a gallery (`retrieve` and `index` take the same), keyed by `load_gallery`'s arguments."""

  def string(name: str, help_text: str) -> flags.FlagHolder:
    return flags.DEFINE_string(name, None, help_text, flag_values=flag_values)

  return {
    "dataset": string("dataset", "EmoMV set whose gallery to use (default: the run's)."),
    "csv": string("gallery_csv", "Your own gallery CSV (EmoMV retrieval layout)."),
    "video_h5": string("gallery_video_h5", "Video features of --gallery_csv."),
    "music_h5": string("gallery_music_h5", "Music features of --gallery_csv."),
    "data_dir": string("data_dir", "TFDS data dir (default: the run's)."),
    "manual_dir": string("manual_dir", "Local EmoMV copy (default: the run's, then $EMOMV_DIR)."),
  }


_GALLERY = define_gallery_flags(_FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4096, "Rows per embedding call.", lower_bound=1, flag_values=_FLAGS)
_INDEX = flags.DEFINE_string(
  "index", None, "A gallery index folder (python -m emvgan_jax.index) to search instead.", flag_values=_FLAGS
)
_SCORES = flags.DEFINE_enum(
  "scores",
  "float32",
  search.SCORE_DTYPES,
  "Score dtype on the devices: float32, or bfloat16 with an exact float32 re-rank (for GPUs and TPUs).",
  flag_values=_FLAGS,
)
flags.mark_flags_as_required(["workdir", "direction"], flag_values=_FLAGS)


@dataclasses.dataclass
class Gallery:
  """Gallery items with their raw (unstandardised) features; row i of every array is item i."""

  name: np.ndarray
  emotion: np.ndarray
  video: np.ndarray | None  # None for a gallery read from an index (`emvgan_jax.index`)
  music: np.ndarray | None
  source: str  # for messages, e.g. 'emomv/c gallery' or a CSV path

  def __len__(self) -> int:
    return len(self.name)


@dataclasses.dataclass
class Hit:
  rank: int
  index: int
  name: str
  cosine: float
  emotion: str


def _modalities(direction: str) -> tuple[str, str]:
  if direction not in DIRECTIONS:
    raise cli.UsageError(f"--direction must be one of {DIRECTIONS}, got {direction!r}")
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
      raise cli.ToolError(
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
    raise cli.ToolError(f"{e}; pass your own with --gallery_csv, --gallery_video_h5 and --gallery_music_h5") from None
  return Gallery(
    name=np.asarray(g.name, str),
    emotion=np.asarray(g.video_emotion),
    video=g.video,
    music=g.music,
    source=f"{config.data.dataset} gallery",
  )


def _standardize(run: restore.Run, modality: str, x: np.ndarray, what: str) -> np.ndarray:
  """Raw features of `modality` standardised with the run's statistics (`api.check_features`); a wrong width or a
  non-finite value is a ToolError."""
  try:
    x = api.check_features(run, modality, x, what, other_modality_hint=": use the other --direction")
  except ValueError as e:
    raise cli.ToolError(str(e)) from None
  return run.standardizer.transform(modality, x)


def check_retrieval_model(run: restore.Run) -> None:
  """A ToolError unless the run's model embeds both modalities in one space."""
  if not run.family.has_retrieval:
    raise cli.ToolError(
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
  raise cli.ToolError(f"no item named {name!r} in the {gallery.source} ({len(gallery)} items); {hint}")


def read_query_features(
  *, query_file: str | None = None, query_h5: str | None = None, query_row: int | None = None
) -> np.ndarray:
  """Raw query features from a .npy file or one row of an HDF5 file, as (N, D)."""
  if query_file:
    if not os.path.isfile(query_file):
      raise cli.UsageError(f"--query_file {query_file} does not exist")
    try:
      x = np.load(query_file, allow_pickle=False)
    except ValueError as e:
      raise cli.UsageError(f"--query_file {query_file} is not a numpy .npy array ({e})") from e
    x = np.asarray(x, np.float32)
    return x[None, :] if x.ndim == 1 else x
  features = files.read_features(query_h5)
  if query_row is None or not 0 <= query_row < len(features):
    raise cli.UsageError(f"--query_row must be a row of {query_h5}, 0 to {len(features) - 1}, got {query_row}")
  return features[query_row : query_row + 1]


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
    gallery_vectors: the gallery's target-modality embeddings, already made (`emvgan_jax.index`); the
      gallery's features are then not needed.
    scores: the index's score dtype, 'float32' or 'bfloat16' (`search.GalleryIndex`).

  Returns:
    `(hits, labels)`: per query, its hits best first; and a label per query for printing.
  """
  check_retrieval_model(run)
  q_mod, g_mod = _modalities(direction)
  embed = {"video": run.family.embed_video, "music": run.family.embed_music}
  if (query is None) == (query_features is None):
    raise cli.UsageError("give exactly one query: --query=NAME, --query_file=x.npy, or --query_h5 with --query_row")
  if query is not None:
    if getattr(gallery, q_mod) is None:
      raise cli.UsageError(
        f"--query=NAME needs the gallery's {q_mod} features, which an index does not hold; give the query as "
        "--query_file or --query_h5, or search without --index"
      )
    row = find_query(gallery, query)
    raw = getattr(gallery, q_mod)[row : row + 1]
    labels = [f"{q_mod} of {query} ({files.EMOTIONS[int(gallery.emotion[row])]})"]
  else:
    raw = np.asarray(query_features, np.float32)
    labels = [f"{q_mod} features #{i}" for i in range(len(raw))] if len(raw) > 1 else [f"{q_mod} features"]
  q = _standardize(run, q_mod, raw, "the query")
  q_emb = search.embed_rows(embed[q_mod], run.state, q, batch_size=batch_size)
  if gallery_vectors is None:
    g = _standardize(run, g_mod, getattr(gallery, g_mod), f"the {gallery.source}")
    gallery_vectors = search.embed_rows(embed[g_mod], run.state, g, batch_size=batch_size)
  index = search.GalleryIndex(gallery_vectors, mesh=run.mesh, chunk_size=chunk_size, scores=scores)
  cosines, indices = index.search(q_emb, k)
  if index.fallbacks:
    logging.info("bfloat16 search: %d of %d queries had near-ties, searched exactly", index.fallbacks, len(q_emb))
  hits = [
    [
      Hit(
        rank=r + 1,
        index=int(i),
        name=str(gallery.name[i]),
        cosine=float(s),
        emotion=files.EMOTIONS[int(gallery.emotion[i])],
      )
      for r, (s, i) in enumerate(zip(row_scores, row_indices))
    ]
    for row_scores, row_indices in zip(cosines, indices)
  ]
  return hits, labels


def gallery_from_index(path: str, run: restore.Run, modality: str) -> tuple[Gallery, np.ndarray]:
  """The gallery items of an index folder (names and emotions, no features) and its `modality` vectors."""
  from emvgan_jax import index  # pylint: disable=g-import-not-at-top

  meta, vectors, names, emotions = index.read_index(path, run, modality)
  return Gallery(name=names, emotion=emotions, video=None, music=None, source=f"index of the {meta['source']}"), vectors


def format_hits(hits: list[Hit], label: str, direction: str, source: str, size: int) -> str:
  """A readable table of one query's hits."""
  _, g_mod = _modalities(direction)
  width = max([len("name")] + [len(h.name) for h in hits])
  lines = [
    f"Top {len(hits)} {g_mod} of the {source} ({size} items) for the {label}:",
    f"{'rank':>4}  {'name':<{width}}  {'cosine':>7}  emotion",
  ]
  lines += [f"{h.rank:>4}  {h.name:<{width}}  {h.cosine:>7.4f}  {h.emotion}" for h in hits]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, restores the run, searches and prints the hits."""
  cli.start_tool(_FLAGS, argv, HELP)

  def body():
    given = [bool(_QUERY.value), bool(_QUERY_FILE.value), bool(_QUERY_H5.value)]
    if sum(given) != 1:
      raise cli.ToolError(
        "give exactly one query: --query=NAME, --query_file=x.npy, or --query_h5=f.h5 with --query_row=i"
      )
    run = cli.load_run(_WORKDIR.value, _CHECKPOINT.value)
    check_retrieval_model(run)  # before loading any data
    vectors = None
    if _INDEX.value:
      given = [f for f in _GALLERY.values() if f.value]
      if given:
        raise cli.UsageError(f"--index holds its gallery: drop --{given[0].name}, or search without --index")
      gallery, vectors = gallery_from_index(_INDEX.value, run, _modalities(_DIRECTION.value)[1])
    else:
      gallery = load_gallery(run, **{arg: f.value for arg, f in _GALLERY.items()})
    features = None
    if not _QUERY.value:
      features = read_query_features(query_file=_QUERY_FILE.value, query_h5=_QUERY_H5.value, query_row=_QUERY_ROW.value)
    hits, labels = retrieve(
      run,
      gallery,
      _DIRECTION.value,
      query=_QUERY.value or None,
      query_features=features,
      k=_K.value,
      chunk_size=_CHUNK_SIZE.value,
      batch_size=_BATCH_SIZE.value,
      gallery_vectors=vectors,
      scores=_SCORES.value,
    )
    print(
      "\n\n".join(
        format_hits(h, label, _DIRECTION.value, gallery.source, len(gallery)) for h, label in zip(hits, labels)
      )
    )

  cli.run_tool(body)


if __name__ == "__main__":
  main()
