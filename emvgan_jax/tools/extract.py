"""Audio and video files in, EmoMV-compatible feature files out: `emvgan-extract --inputs=... --out_dir=...`.

Usage:
  emvgan-extract --inputs=clips/ --out_dir=features/ [--name=mine] [--modalities=video,music] \
      [--labels=labels.csv] [--weights=published|random] [--weights_dir=DIR]

For each file (or each media file in a folder given): the SlowFast-R50 vector of its video (2304 values) and the
VGGish vector of its audio (128), extracted as docs/data.md describes ("Extracting features from your own
clips"). Writes into --out_dir, in the layout of EmoMV's retrieval folders:
  SlowFast_<name>.h5 (dataset `default`, N x 2304), VGGish_<name>.h5 (dataset `data`, N x 128),
  <name>_files.csv (row, name, file, clips, patches), and with --labels (a CSV of `name,emotion` rows)
  <name>.csv in EmoMV's 4-column retrieval layout, so that `emvgan-retrieve --gallery_csv=<name>.csv
  --gallery_video_h5=... --gallery_music_h5=...` searches your clips, and `emvgan-retrieve --query_h5=...
  --query_row=i` asks with one of them. A row's name is its file name without the extension.

The published weights are fetched once from their official sources and converted (needs `pip install -e
'.[extract]'`); --weights=random runs the same pipeline with random weights (numbers without meaning, for tests).
"""

from __future__ import annotations

import os

from absl import flags

from emvgan_jax import errors
from emvgan_jax.tools import cli

HELP = __doc__
MODALITIES = ("video", "music")

_FLAGS = cli.new_flag_values()
_INPUTS = flags.DEFINE_list("inputs", None, "Media files, or folders of them (comma-separated).", flag_values=_FLAGS)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write the feature files.", flag_values=_FLAGS)
_NAME = flags.DEFINE_string("name", "clips", "Stem of the output files.", flag_values=_FLAGS)
_MODALITIES = flags.DEFINE_list(
  "modalities",
  list(MODALITIES),
  "video (SlowFast), music (VGGish), or both; every file needs the streams asked.",
  flag_values=_FLAGS,
)
_LABELS = flags.DEFINE_string(
  "labels",
  None,
  "CSV of `name,emotion` rows (one of exciting, fear, tense, sad, relax) for <name>.csv.",
  flag_values=_FLAGS,
)
_WEIGHTS = flags.DEFINE_enum("weights", "published", ["published", "random"], "Extractor weights.", flag_values=_FLAGS)
_WEIGHTS_DIR = flags.DEFINE_string(
  "weights_dir", None, "Cache of the weights (default ~/.cache/emvgan_jax/weights).", flag_values=_FLAGS
)
_CLIP_BATCH = flags.DEFINE_integer(
  "clip_batch", 2, "SlowFast clips per forward pass.", lower_bound=1, flag_values=_FLAGS
)
flags.mark_flags_as_required(["inputs", "out_dir"], flag_values=_FLAGS)


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line: extracts, prints where the files are."""
  cli.start_tool(_FLAGS, argv, HELP)
  from emvgan_jax.extraction import pipeline  # deferred: JAX loads once the flags are parsed

  try:
    outputs = pipeline.extract(
      pipeline.media_files(_INPUTS.value),
      os.path.expanduser(_OUT_DIR.value),
      name=_NAME.value,
      modalities=_MODALITIES.value,
      labels=_LABELS.value,
      weights=_WEIGHTS.value,
      weights_dir=_WEIGHTS_DIR.value,
      clip_batch=_CLIP_BATCH.value,
    )
  except ImportError as e:  # PyAV or PyTorch, the [extract] extra
    raise errors.Error(f"{e}: extraction needs pip install -e '.[extract]'") from None
  print("Wrote " + ", ".join(os.path.abspath(p) for p in outputs.values()))


if __name__ == "__main__":
  main()
