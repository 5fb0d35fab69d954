"""Which music fits this video (and back)? `emvgan-retrieve --workdir=W --direction=... --query=...`.

Prints the top-k gallery items (rank, name, cosine, emotion) for a query, searched exactly in the run's common
space (`emvgan_jax/evaluation/retrieval.py`). The query is one of:
  --query=NAME                     a gallery item: its video (video_to_music) or its music (music_to_video)
  --query_file=x.npy               your own raw feature vector(s), (D,) or (N, D), of the query's modality
  --query_h5=f.h5 --query_row=i    row i (0-based) of an HDF5 feature file in the EmoMV layout
The gallery is the run's dataset's `gallery` split (`--dataset` picks another EmoMV set), your own files in the
EmoMV retrieval layout (--gallery_csv=g.csv --gallery_video_h5=v.h5 --gallery_music_h5=m.h5), or `--index=DIR`,
a gallery embedded once by `emvgan-index` (queries then come from --query_file or --query_h5).

Raw features are standardised with the run's train-split statistics before they are embedded. The gallery is
sharded over the devices, each walks its shard in chunks of --chunk_size rows with a running top k, and the
devices' top k are merged. `--scores=bfloat16` holds and scores the gallery in bfloat16 on the devices and
re-ranks the candidates exactly in float32, with the same result; it pays on GPUs and TPUs, not on CPUs.

Usage:
  emvgan-retrieve --workdir=runs/emomv_c --direction=video_to_music --query=<gallery name> [--k=10]
"""

from __future__ import annotations

from absl import flags

from emvgan_jax.tools import cli

HELP = __doc__
# The choices of the flags below, as the library names them (evaluation.metrics.DIRECTIONS,
# evaluation.search.SCORE_DTYPES and DEFAULT_CHUNK_SIZE); written out so that --help needs no JAX.
DIRECTIONS = ("video_to_music", "music_to_video")
SCORE_DTYPES = ("float32", "bfloat16")
DEFAULT_CHUNK_SIZE = 65536

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
  "chunk_size", DEFAULT_CHUNK_SIZE, "Gallery rows per search step.", lower_bound=1, flag_values=_FLAGS
)
_GALLERY = cli.define_gallery_flags(_FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4096, "Rows per embedding call.", lower_bound=1, flag_values=_FLAGS)
_INDEX = flags.DEFINE_string(
  "index", None, "A gallery index folder (emvgan-index) to search instead.", flag_values=_FLAGS
)
_SCORES = flags.DEFINE_enum(
  "scores",
  "float32",
  SCORE_DTYPES,
  "Score dtype on the devices: float32, or bfloat16 with an exact float32 re-rank (for GPUs and TPUs).",
  flag_values=_FLAGS,
)
_EMOTION_WEIGHT = flags.DEFINE_float(
  "emotion_weight",
  None,
  "Rank by (1 - w) cosine + w emotion agreement: towards 1 for more of the same mood, towards 0 for more of this "
  "very clip (default: the weight the run chose on its selection holdout).",
  lower_bound=0.0,
  upper_bound=1.0,
  flag_values=_FLAGS,
)
flags.mark_flags_as_required(["workdir", "direction"], flag_values=_FLAGS)


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, restores the run, searches and prints the hits."""
  cli.start_tool(_FLAGS, argv, HELP)
  given = [bool(_QUERY.value), bool(_QUERY_FILE.value), bool(_QUERY_H5.value)]
  if sum(given) != 1:
    cli.fail(
      "error: give exactly one query: --query=NAME, --query_file=x.npy, or --query_h5=f.h5 with --query_row=i",
      cli.USAGE_STATUS,
    )
  if _INDEX.value and any(f.value for f in _GALLERY.values()):
    named = next(f.name for f in _GALLERY.values() if f.value)
    cli.fail(f"error: --index holds its gallery: drop --{named}, or search without --index", cli.USAGE_STATUS)
  from emvgan_jax.evaluation import index, retrieval  # deferred: JAX loads once the flags are parsed
  from emvgan_jax.runtime import restore  # deferred: as above

  run = restore.load_run(_WORKDIR.value, _CHECKPOINT.value)
  retrieval.check_retrieval_model(run)  # before loading any data
  weight = retrieval.emotion_weight_of(run, _EMOTION_WEIGHT.value)
  vectors = None
  if _INDEX.value:
    gallery, vectors = index.read_gallery(_INDEX.value, run, retrieval.modalities(_DIRECTION.value)[1])
  else:
    gallery = retrieval.load_gallery(run, **{arg: f.value for arg, f in _GALLERY.items()})
  features = None
  if not _QUERY.value:
    features = retrieval.read_query_features(
      query_file=_QUERY_FILE.value, query_h5=_QUERY_H5.value, query_row=_QUERY_ROW.value
    )
  hits, labels = retrieval.retrieve(
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
    emotion_weight=weight,
  )
  tables = [
    retrieval.format_hits(h, label, _DIRECTION.value, gallery.source, len(gallery), emotion_weight=weight)
    for h, label in zip(hits, labels)
  ]
  print("\n\n".join(tables))


if __name__ == "__main__":
  main()
