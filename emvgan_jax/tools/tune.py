"""Tunes EMVGAN's defaults on held-out parts of EmoMV-C train, never on validation: `emvgan-tune --workdir=W`.

Usage (the default grid, 3 holdouts x 1 seed, took 6.5 min on 2 CPU cores):
  emvgan-tune --manual_dir=$EMOMV_DIR --data_dir=/tmp/tfds --workdir=runs/tune \
      [--holdout_seeds=0,1,2] [--seeds=0] [--grid=default|alignment|none] [--candidate='name:key=value,key=value']

`--candidate` (repeatable) adds a setting, e.g. --candidate='h128:emvgan.hidden=128,optim.learning_rate=3e-4';
`--grid=none` runs only those (and the baselines); `--grid=alignment` the adversarial variants of docs/models.md,
section 5 (does any close the modality gap?). Writes and prints `<workdir>/tuning.md`; what it holds, and how
runs are reused, is in `emvgan_jax/experiments/tune.py`.
"""

from __future__ import annotations

from absl import flags

from emvgan_jax import errors
from emvgan_jax.tools import cli

HELP = __doc__
# The names of `experiments.tune.GRIDS` (checked by a test), written out so that --help needs no JAX.
GRID_NAMES = ("default", "alignment", "selection", "selection_finalists", "none")

_FLAGS = cli.new_flag_values()
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Local copy of the EmoMV repository.", flag_values=_FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir.", flag_values=_FLAGS)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the runs and tuning.md.", flag_values=_FLAGS)
_HOLDOUT_SEEDS = flags.DEFINE_list(
  "holdout_seeds", ["0", "1", "2"], "Seeds of the held-out part of train.", flag_values=_FLAGS
)
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Training seeds (config.seed).", flag_values=_FLAGS)
_HOLDOUT_FRACTION = flags.DEFINE_float(
  "holdout_fraction", 0.2, "Share of train held out (grouped by video).", flag_values=_FLAGS
)
_SELECTION_FRACTION = flags.DEFINE_float(
  "selection_fraction",
  0.0,
  "> 0: every run (baselines too) selects its checkpoint on a grouped holdout of this share of the remaining "
  "train rows, so the held-out part only reports (what --grid=selection needs to compare selectors fairly).",
  flag_values=_FLAGS,
)
_GRID = flags.DEFINE_enum(
  "grid",
  "default",
  GRID_NAMES,
  "The candidate grid (emvgan_jax/experiments/tune.py defines each).",
  flag_values=_FLAGS,
)
_CANDIDATES = flags.DEFINE_multi_string(
  "candidate",
  [],
  "Extra candidate 'name:key=value,key=value' (keys are config fields); repeatable.",
  flag_values=_FLAGS,
)
_BASELINES = flags.DEFINE_list(
  "baselines",
  ["retrieval_multi", "classification_multi"],
  "EmoMV baseline variants trained on the same holdouts (configs/emomv_baseline.py).",
  flag_values=_FLAGS,
)
_CACHE = flags.DEFINE_string(
  "compilation_cache_dir",
  cli.DEFAULT_COMPILATION_CACHE,
  "JAX persistent compilation cache. Empty disables it.",
  flag_values=_FLAGS,
)
_ENSEMBLE = flags.DEFINE_bool(
  "ensemble",
  False,
  "Also a row per EMVGAN setting: its --seeds scored as one model on each holdout (needs two or more seeds).",
  flag_values=_FLAGS,
)
flags.mark_flags_as_required(["workdir"], flag_values=_FLAGS)


def parse_candidate(spec: str) -> tuple[str, dict[str, str]]:
  """'name:a.b=1,c.d=x' -> ('name', {'a.b': '1', 'c.d': 'x'}); values are parsed as their fields' types later."""
  name, _, body = spec.partition(":")
  overrides = {}
  for item in filter(None, body.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise errors.UsageError(f"--candidate={spec!r}: {item!r} must be key=value")
    overrides[key.strip()] = value.strip()
  return name.strip(), overrides


@cli.command
def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, tunes, prints tuning.md."""
  cli.start_tool(_FLAGS, argv, HELP, compilation_cache=_CACHE)
  # A usage error is one line before JAX loads.
  holdouts = cli.parse_ints(_HOLDOUT_SEEDS.value, "holdout_seeds")
  seeds = cli.parse_ints(_SEEDS.value, "seeds")
  extra = dict(parse_candidate(spec) for spec in _CANDIDATES.value)
  if _ENSEMBLE.value and len(seeds) < 2:
    raise errors.UsageError(f"--ensemble needs two or more --seeds, got {_SEEDS.value}")
  from emvgan_jax.experiments import tune  # deferred: JAX loads once the flags are parsed

  candidates = {**tune.GRIDS[_GRID.value], **extra}
  table = tune.run_tuning(
    workdir=_WORKDIR.value,
    holdouts=holdouts,
    seeds=seeds,
    candidates=candidates,
    baselines=_BASELINES.value,
    holdout_fraction=_HOLDOUT_FRACTION.value,
    manual_dir=_MANUAL_DIR.value,
    data_dir=_DATA_DIR.value,
    selection_fraction=_SELECTION_FRACTION.value,
    ensemble=_ENSEMBLE.value,
  )
  print(table, flush=True)


if __name__ == "__main__":
  main()
