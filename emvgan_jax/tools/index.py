"""Embed a gallery once and save it as an index: `emvgan-index --workdir=W --modality=music --out=DIR`.

Embedding a large gallery is the slow part of a search; `emvgan-retrieve --index=DIR` then loads the saved
vectors instead of embedding the gallery again. The gallery is the run's dataset's `gallery` split, or your own
files (`--gallery_csv`, `--gallery_video_h5`, `--gallery_music_h5`, as for `emvgan-retrieve`). What DIR holds,
and what a search checks before it trusts it, is in `emvgan_jax/evaluation/index.py`; DIR is whole or absent.

Usage:
  emvgan-index --workdir=runs/emomv_c --modality=music --out=runs/emomv_c/index_music
"""

from __future__ import annotations

import os

from absl import flags

from emvgan_jax.tools import cli

HELP = __doc__
MODALITIES = ("video", "music")

_FLAGS = cli.new_flag_values()
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.", flag_values=_FLAGS)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.", flag_values=_FLAGS)
_MODALITY = flags.DEFINE_enum("modality", None, MODALITIES, "Which side of the gallery to index.", flag_values=_FLAGS)
_OUT = flags.DEFINE_string("out", None, "Folder to write the index to (must not exist).", flag_values=_FLAGS)
_GALLERY = cli.define_gallery_flags(_FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4096, "Rows per embedding call.", lower_bound=1, flag_values=_FLAGS)
flags.mark_flags_as_required(["workdir", "modality", "out"], flag_values=_FLAGS)


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line."""
  cli.start_tool(_FLAGS, argv, HELP)
  if os.path.exists(_OUT.value):
    cli.fail(
      f"error: --out {_OUT.value} already exists; give a new folder (an index is never overwritten)", cli.USAGE_STATUS
    )
  from emvgan_jax.evaluation import index, retrieval  # deferred: JAX loads once the flags are parsed
  from emvgan_jax.runtime import restore  # deferred: as above

  run = restore.load_run(_WORKDIR.value, _CHECKPOINT.value)
  retrieval.check_retrieval_model(run)
  gallery = retrieval.load_gallery(run, **{arg: f.value for arg, f in _GALLERY.items()})
  meta = index.write_index(run, gallery, _MODALITY.value, _OUT.value, batch_size=_BATCH_SIZE.value)
  print(
    f"Wrote {os.path.abspath(_OUT.value)}: {meta['count']:,} {meta['modality']} embeddings of width {meta['dim']} "
    f"from the {meta['source']}, {meta['model']} at step {meta['checkpoint_step']}"
  )


if __name__ == "__main__":
  main()
