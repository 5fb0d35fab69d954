"""Trains and evaluates models over seeds and writes one comparison table: `emvgan-sweep --configs=... --workdir=W`.

Usage:
  emvgan-sweep --workdir=runs/sweep_c --seeds=0,1,2,3,4 \
      --configs=configs/emomv_c.py --configs=configs/emomv_c_noadv.py \
      --configs=configs/emomv_baseline.py:c,retrieval_multi --configs=configs/emomv_baseline.py:c,classification_multi \
      --manual_dir=$EMOMV_DIR [--data_dir=/tmp/tfds] [--override=train.num_epochs=50 ...] [--protocol=cv]

Config arguments contain commas (`emomv_baseline.py:c,retrieval_multi`), so configs are NOT a comma list:
repeat `--configs`, or separate several in one value with `;` (quote it in a shell):
`--configs='configs/emomv_c.py;configs/emomv_baseline.py:c,retrieval_multi'`. `--override=key=value`
(repeatable) sets a config field in every run, e.g. `--override=train.max_steps=100`; `--data_dir` and
`--manual_dir` set where every run reads its data.

Every (config, seed) not yet finished in `W/<config>/seed_<s>` is trained (a finished one is read back), then
`W/table.md` and `W/table.json` are written: mean +- sample std over seeds, a chance row, the splits named in
the caption. `--protocol=cv` runs repeated grouped k-fold cross-validation over train + validation instead and
adds the paired difference of the first config to every other one, with 95% intervals. What each protocol does
is in `emvgan_jax/experiments/sweep.py` and docs/models.md, section 4.7.
"""

from __future__ import annotations

import os

from absl import flags

from emvgan_jax import errors
from emvgan_jax.tools import cli

HELP = __doc__
PROTOCOLS = ("published", "cv")

_FLAGS = cli.new_flag_values()
_CONFIGS = flags.DEFINE_multi_string(
  "configs", None, "Config file[:arg]; repeat the flag, or separate with ';'.", flag_values=_FLAGS
)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Comma-separated training seeds (config.seed).", flag_values=_FLAGS)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Sweep directory (one sub-workdir per config and seed).", flag_values=_FLAGS
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir for every run.", flag_values=_FLAGS)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Local EmoMV copy for every run.", flag_values=_FLAGS)
_OVERRIDES = flags.DEFINE_multi_string(
  "override", [], "key=value config override for every run (repeatable).", flag_values=_FLAGS
)
_CACHE = flags.DEFINE_string(
  "compilation_cache_dir",
  cli.DEFAULT_COMPILATION_CACHE,
  "JAX persistent compilation cache: later seeds and configs skip XLA compilation. Empty disables it.",
  flag_values=_FLAGS,
)
_PROTOCOL = flags.DEFINE_enum(
  "protocol",
  "published",
  PROTOCOLS,
  "published: EmoMV's splits (select and report on validation; A reports on test). cv: repeated grouped k-fold "
  "cross-validation over train + validation, selecting inside the training folds.",
  flag_values=_FLAGS,
)
_CV_FOLDS = flags.DEFINE_integer("cv_folds", 5, "--protocol=cv: number of folds.", flag_values=_FLAGS)
_CV_REPEATS = flags.DEFINE_integer(
  "cv_repeats", 2, "--protocol=cv: repetitions with different fold assignments.", flag_values=_FLAGS
)
_SELECTION_FRACTION = flags.DEFINE_float(
  "selection_fraction", 0.2, "--protocol=cv: share of the training folds held out for selection.", flag_values=_FLAGS
)
_EVAL_DATASETS = flags.DEFINE_list(
  "eval_datasets",
  [],
  "Other EmoMV sets to evaluate every trained model on (e.g. emomv/a,emomv/b): one more table each, "
  "table_<set>.md. A set whose local copy lacks files is built with the splits it has.",
  flag_values=_FLAGS,
)
_REFERENCE = flags.DEFINE_string(
  "reference", None, "--protocol=cv: the config the paired differences are of (default: the first).", flag_values=_FLAGS
)
_ENSEMBLE = flags.DEFINE_bool(
  "ensemble",
  False,
  "Also a row per EMVGAN config: its seeds as one model (the mean of their match probabilities and ranking "
  "scores; emvgan_jax/evaluation/ensemble.py). Needs two or more --seeds.",
  flag_values=_FLAGS,
)
_WEIGHT_ROWS = flags.DEFINE_bool(
  "emotion_weight_rows",
  False,
  "Also two rows per EMVGAN config: its runs ranked by cosine only (emotion weight 0) and by emotion only (1), "
  "beside its own row (the weight each run chose on its selection holdout).",
  flag_values=_FLAGS,
)
flags.mark_flags_as_required(["configs", "workdir"], flag_values=_FLAGS)


def _check_flags() -> list[int]:
  """The seeds, once the flags that only the command line can get wrong are checked."""
  if _PROTOCOL.value == "cv" and (_CV_FOLDS.value < 2 or _CV_REPEATS.value < 1):
    raise errors.UsageError(f"--cv_folds={_CV_FOLDS.value} --cv_repeats={_CV_REPEATS.value}: need 2+ folds, 1+ repeats")
  seeds = cli.parse_ints(_SEEDS.value, "seeds")
  if _ENSEMBLE.value and len(seeds) < 2:
    raise errors.UsageError(f"--ensemble needs two or more --seeds, got {_SEEDS.value}")
  return seeds


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, runs the sweep, prints the table and its wall time."""
  cli.start_tool(_FLAGS, argv, HELP, compilation_cache=_CACHE)
  seeds = _check_flags()  # a usage error is one line before JAX loads
  from emvgan_jax.experiments import sweep  # deferred: JAX loads once the flags are parsed

  protocol = sweep.Protocol(_PROTOCOL.value, _CV_FOLDS.value, _CV_REPEATS.value, _SELECTION_FRACTION.value)
  table = sweep.run_sweep(
    sweep.split_config_specs(_CONFIGS.value),
    seeds,
    _WORKDIR.value,
    data_dir=_DATA_DIR.value,
    manual_dir=_MANUAL_DIR.value,
    overrides=_OVERRIDES.value,
    protocol=protocol,
    reference=_REFERENCE.value,
    eval_datasets=_EVAL_DATASETS.value,
    ensemble=_ENSEMBLE.value,
    emotion_weight_rows=_WEIGHT_ROWS.value,
  )
  print(sweep.format_markdown(table))
  for dataset, other in table.get("elsewhere", {}).items():
    print(f"\nOn {dataset}:\n" + sweep.format_markdown(other))
  print(
    f"Sweep wall time: {table['wall_seconds']:.1f} s; wrote {os.path.join(_WORKDIR.value, 'table.md')} and table.json"
  )


if __name__ == "__main__":
  main()
