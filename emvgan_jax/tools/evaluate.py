"""Evaluates a trained run from its workdir: `emvgan-evaluate --workdir=W` (`python -m emvgan_jax.tools.evaluate`).

Restores a checkpoint of W with its train-split standardisation, runs the evaluation protocol (classification on
the pair split, retrieval both ways on the gallery, chance beside every number; docs/models.md, section 4) with
the same code as training, and writes results.json, results.md, the plots and report.html to
`W/eval/<dataset>-<checkpoint>/` (`emvgan_jax/evaluation/run.py` says what each file holds).

Usage:
  emvgan-evaluate --workdir=runs/emomv_c [--checkpoint=best|latest|STEP] [--dataset=emomv/b]
      [--split=validation|test|train|train-holdout] [--export_embeddings] [--data_dir=...] [--manual_dir=...]

`--dataset` evaluates a model trained on one EmoMV set on another set's splits, standardised with the training
set's statistics. A split other than the protocol's default adds `-<split>` to the output folder's name.
"""

from __future__ import annotations

import os

from absl import flags

from emvgan_jax.tools import cli

HELP = __doc__

_FLAGS = cli.new_flag_values()
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir to evaluate.", flag_values=_FLAGS)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "best", "'best', 'latest' or a step number.", flag_values=_FLAGS)
_DATASET = flags.DEFINE_string(
  "dataset",
  None,
  "EmoMV set to evaluate on (emomv/a, emomv/b, emomv/c); default: the one the run was trained on.",
  flag_values=_FLAGS,
)
_SPLIT = flags.DEFINE_string(
  "split",
  None,
  "Pair split for classification (default: test on emomv/a, validation "
  "otherwise; train-holdout for a held-out run on its own dataset).",
  flag_values=_FLAGS,
)
_GALLERY = flags.DEFINE_enum(
  "gallery",
  "gallery",
  ["gallery", "train"],
  "Retrieval gallery: the dataset's `gallery` split, or `train`, a gallery rebuilt from the segments the run "
  "trained on (to tell what the model learnt in general from what it fitted to its training clips).",
  flag_values=_FLAGS,
)
_EXPORT = flags.DEFINE_bool(
  "export_embeddings",
  False,
  "Also write embeddings.npz (gallery names, emotion ids, video and music common-space vectors).",
  flag_values=_FLAGS,
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the run's).", flag_values=_FLAGS)
_MANUAL_DIR = flags.DEFINE_string(
  "manual_dir", None, "Local copy of the EmoMV repository (default: the run's, then $EMOMV_DIR).", flag_values=_FLAGS
)
_OUT_DIR = flags.DEFINE_string(
  "out_dir", None, "Where to write (default: W/eval/<dataset>-<checkpoint>).", flag_values=_FLAGS
)
_PLOTS = flags.DEFINE_bool(
  "plots", True, "Write the plots (PNG) and report.html, the page that shows the run.", flag_values=_FLAGS
)
_SVG = flags.DEFINE_bool(
  "svg",
  False,
  "With --plots: also write each plot as SVG (vector, for papers); report.html embeds those.",
  flag_values=_FLAGS,
)
_EMOTION_WEIGHT = flags.DEFINE_float(
  "emotion_weight",
  None,
  "Rank the gallery by (1 - w) cosine + w emotion agreement (docs/models.md, emotion-aware ranking); default: the "
  "weight the run chose on its selection holdout (its results.json).",
  lower_bound=0.0,
  upper_bound=1.0,
  flag_values=_FLAGS,
)
flags.mark_flag_as_required("workdir", flag_values=_FLAGS)


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, evaluates, prints the table and where the files are."""
  cli.start_tool(_FLAGS, argv, HELP)
  from emvgan_jax.evaluation import protocol, run  # deferred: JAX loads once the flags are parsed

  ev = run.evaluate_run(
    _WORKDIR.value,
    checkpoint=_CHECKPOINT.value,
    dataset=_DATASET.value,
    split=_SPLIT.value,
    gallery=_GALLERY.value,
    data_dir=_DATA_DIR.value,
    manual_dir=_MANUAL_DIR.value,
    export_embeddings=_EXPORT.value,
    out_dir=_OUT_DIR.value,
    make_plots=_PLOTS.value,
    emotion_weight=_EMOTION_WEIGHT.value,
    svg=_SVG.value,
  )
  print(protocol.format_table(ev.results))
  print(f"\nWrote {os.path.abspath(ev.out_dir)}: {', '.join(sorted(os.listdir(ev.out_dir)))}")


if __name__ == "__main__":
  main()
