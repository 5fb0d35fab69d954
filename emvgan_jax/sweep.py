"""Trains and evaluates models over seeds and writes one comparison table: `python -m emvgan_jax.sweep`.

Usage (from the repository root):
  python -m emvgan_jax.sweep --workdir=runs/sweep_c --seeds=0,1,2,3,4 \
      --configs=configs/emomv_c.py --configs=configs/emomv_c_noadv.py \
      --configs=configs/emomv_baseline.py:c,retrieval_multi --configs=configs/emomv_baseline.py:c,classification_multi \
      --manual_dir=../shared/emomv [--data_dir=/tmp/tfds] [--override=train.num_epochs=50 ...]

Config arguments contain commas (`emomv_baseline.py:c,retrieval_multi`), so configs are NOT a comma list:
repeat `--configs`, or separate several in one value with `;` (quote it in a shell):
`--configs='configs/emomv_c.py;configs/emomv_baseline.py:c,retrieval_multi'`. `--override=key=value`
(repeatable) sets a config field in every run, e.g. `--override=train.max_steps=100`; `--data_dir` and
`--manual_dir` set where every run reads its data.

Each (config, seed) trains in-process, one after another, into `<workdir>/<config-slug>/seed_<seed>` (slug:
`emomv_c`, `emomv_baseline-c-retrieval_multi`). A run whose `results.json` exists is finished and is read back,
not retrained; an interrupted one resumes from its latest checkpoint. The evaluation is training's own
`results.json` (the best checkpoint, selected on validation); on EmoMV-A, whose protocol reports
classification on test, the best checkpoint is evaluated once more on test (`emvgan_jax.evaluate`, also
reused when present).

Writes `<workdir>/table.md` and `<workdir>/table.json`: per model, mean +- std over seeds of v->m and m->v label
mAP, hit@1, hit@5 and pair Recall@10, pair-classification accuracy, F1 and ROC-AUC, and the modality gap and
probe accuracy of the common space (`emvgan_jax.alignment`); the std is the SAMPLE
standard deviation (ddof=1; none for a single seed). Chance has its own row; the caption names the splits and
the selection split. A classification-only baseline has empty retrieval cells. The sweep's wall time is
printed and recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags

from emvgan_jax import config_lib
from emvgan_jax import evaluate as evaluate_lib
from emvgan_jax.data import emomv
from emvgan_jax.runtime import cli, experiments
from emvgan_jax.runtime.experiments import STD_DDOF, TrainFn, get_path, mean_std

HELP = __doc__

# (key in table.json, path in results.json, column header). Retrieval chance is the same in both directions.
METRICS = (
  ("video_to_music/map", ("retrieval", "video_to_music", "map"), "v->m mAP"),
  ("video_to_music/hit@1", ("retrieval", "video_to_music", "hit@1"), "v->m hit@1"),
  ("video_to_music/hit@5", ("retrieval", "video_to_music", "hit@5"), "v->m hit@5"),
  ("video_to_music/recall@10", ("retrieval", "video_to_music", "recall@10"), "v->m R@10"),
  ("music_to_video/map", ("retrieval", "music_to_video", "map"), "m->v mAP"),
  ("music_to_video/hit@1", ("retrieval", "music_to_video", "hit@1"), "m->v hit@1"),
  ("music_to_video/hit@5", ("retrieval", "music_to_video", "hit@5"), "m->v hit@5"),
  ("music_to_video/recall@10", ("retrieval", "music_to_video", "recall@10"), "m->v R@10"),
  ("classification/accuracy", ("classification", "accuracy"), "accuracy"),
  ("classification/f1", ("classification", "f1"), "F1"),
  ("classification/roc_auc", ("classification", "roc_auc"), "ROC-AUC"),
  ("alignment/centroid_gap", ("alignment", "centroid_gap"), "modality gap"),
  ("alignment/modality_probe_accuracy", ("alignment", "modality_probe_accuracy"), "modality probe"),
)

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
flags.mark_flags_as_required(["configs", "workdir"], flag_values=_FLAGS)


# ------------------------------------------------------------------------------------------------------------
# Configs.


def split_config_specs(values: Sequence[str]) -> list[str]:
  """Config specs from repeated `--configs` values, each possibly holding several separated by ';'."""
  return [s.strip() for v in values for s in v.split(";") if s.strip()]


def config_slug(spec: str) -> str:
  """`configs/emomv_baseline.py:c,retrieval_multi` -> `emomv_baseline-c-retrieval_multi`."""
  path, _, arg = spec.partition(":")
  stem = os.path.splitext(os.path.basename(path))[0]
  parts = [stem] + [p for p in re.split(r"[,:/\s]+", arg) if p]
  return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(parts))


def make_config(
  spec: str, seed: int, *, data_dir: str | None = None, manual_dir: str | None = None, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
  """The config of one run of the sweep."""
  config = config_lib.load_config_file(spec)
  for override in overrides:
    config_lib.apply_override(config, override)
  config.seed = int(seed)
  if data_dir:
    config.data.data_dir = data_dir
  if manual_dir:
    config.data.manual_dir = manual_dir
  return config


# ------------------------------------------------------------------------------------------------------------
# Runs.


@dataclasses.dataclass
class RunResult:
  """One (config, seed) of the sweep."""

  spec: str
  seed: int
  workdir: str
  status: str  # 'trained' or 'reused'
  results: dict[str, Any]  # the evaluation used in the table (training's, or the protocol split's)
  seconds: float


def run_one(
  spec: str,
  seed: int,
  run_dir: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: Sequence[str] = (),
  train_fn: TrainFn | None = None,
) -> RunResult:
  """Trains (or reads back) one run and returns the evaluation that goes into the table.

  `train_fn` trains one run (default: `train.train_and_evaluate`, imported at call time).
  """
  t_start = time.time()
  config = make_config(spec, seed, data_dir=data_dir, manual_dir=manual_dir, overrides=overrides)
  fn = experiments.runner(config) if train_fn is None or config.model == "peer" else train_fn
  results, status = experiments.train_or_reuse(config, run_dir, train_fn=fn, on_mismatch="error")
  # Training evaluates on validation; the protocol reports EmoMV-A's classification on test.
  default = emomv.default_split(config.data.dataset, config.data.holdout_fraction)
  if results["classification"]["split"] != default:
    name = evaluate_lib.output_name(config.data.dataset, "best", default, default)
    eval_path = os.path.join(run_dir, "eval", name, "results.json")
    if os.path.isfile(eval_path):
      results = experiments.read_json(eval_path)
    else:
      results = evaluate_lib.evaluate_run(run_dir, checkpoint="best", data_dir=data_dir, manual_dir=manual_dir).results
  return RunResult(
    spec=spec, seed=seed, workdir=run_dir, status=status, results=results, seconds=round(time.time() - t_start, 2)
  )


# ------------------------------------------------------------------------------------------------------------
# The table.


def _chance_path(path: Sequence[str]) -> tuple[str, ...]:
  """Where results.json keeps the chance level of a metric (retrieval chance is the same in both directions)."""
  return ("chance", path[0], path[-1])


def summarize(runs: Sequence[RunResult], *, seeds: Sequence[int], wall_seconds: float) -> dict[str, Any]:
  """table.json: per config the mean and std over seeds of every metric, chance rows, and the caption."""
  rows = []
  for spec in dict.fromkeys(r.spec for r in runs):
    mine = [r for r in runs if r.spec == spec]
    first = mine[0].results
    cells = {}
    for key, path, _ in METRICS:
      values = [v for v in (get_path(r.results, path) for r in mine) if v is not None]
      cells[key] = mean_std(values) if values else None
    rows.append(
      {
        "config": spec,
        "slug": config_slug(spec),
        "model": first.get("model"),
        "description": first.get("description"),
        "dataset": first["dataset"],
        "classification_split": first["classification"]["split"],
        "gallery_split": first.get("retrieval", {}).get("split"),
        "selection_split": first.get("selection", {}).get("split"),
        "seeds": [r.seed for r in mine],
        "workdirs": [r.workdir for r in mine],
        "status": [r.status for r in mine],
        "seconds": [r.seconds for r in mine],
        "metrics": cells,
      }
    )
  chance = []
  evaluations = [r.results for r in runs]
  for dataset, split in dict.fromkeys((e["dataset"], e["classification"]["split"]) for e in evaluations):
    same = [e for e in evaluations if (e["dataset"], e["classification"]["split"]) == (dataset, split)]
    with_gallery = [e for e in same if "retrieval" in e]
    values = {}
    for key, path, _ in METRICS:
      found = [v for v in (get_path(e, _chance_path(path)) for e in same) if v is not None]
      values[key] = found[0] if found else None
    chance.append(
      {
        "dataset": dataset,
        "classification_split": split,
        "num_pairs": same[0]["classification"].get("num_pairs"),
        "gallery_split": with_gallery[0]["retrieval"]["split"] if with_gallery else None,
        "gallery_size": with_gallery[0]["retrieval"]["gallery_size"] if with_gallery else None,
        "metrics": values,
      }
    )
  caption = _caption(rows, chance, seeds, wall_seconds, runs)
  return {
    "caption": caption,
    "std_ddof": STD_DDOF,
    "seeds": list(seeds),
    "wall_seconds": round(wall_seconds, 2),
    "metrics": [{"key": k, "header": h} for k, _, h in METRICS],
    "rows": rows,
    "chance": chance,
  }


def _caption(
  rows: list[dict[str, Any]],
  chance: list[dict[str, Any]],
  seeds: Sequence[int],
  wall_seconds: float,
  runs: Sequence[RunResult],
) -> str:
  parts = []
  for c in chance:
    retrieval = (
      f", retrieval (both directions, all {c['gallery_size']} items ranked) on its `{c['gallery_split']}`"
      if c["gallery_split"]
      else ""
    )
    parts.append(
      f"{c['dataset']}: classification on the `{c['classification_split']}` split ({c['num_pairs']} pairs){retrieval}"
    )
  # Peers choose a hyper-parameter on train holdouts rather than a checkpoint; the caption says so apart.
  is_peer = [str(r.get("model") or "").startswith("peer_") for r in rows]
  selection = sorted({r["selection_split"] for r, p in zip(rows, is_peer) if r["selection_split"] and not p})
  peer_selection = sorted({r["selection_split"] for r, p in zip(rows, is_peer) if r["selection_split"] and p})
  reported = {c["classification_split"] for c in chance}
  same = (
    " The selection split is also the reported one (EmoMV-B and -C have no test split; the published "
    "protocol does the same), so these numbers are slightly optimistic."
    if reported & set(selection)
    else ""
  )
  trained = sum(r.status == "trained" for r in runs)
  return (
    f"{'; '.join(parts)}. Checkpoints selected on `{', '.join(selection) or '?'}`.{same} "
    + (f"Peers' hyper-parameters chosen on `{', '.join(peer_selection)}`. " if peer_selection else "")
    + "mAP and hit@K: label relevance (same emotion); R@10: "
    "the item's own counterpart in the top 10; modality gap: distance between the centroids of the unit video and "
    "music gallery embeddings; modality probe: held-out accuracy of a linear probe telling the two apart (0.5: "
    f"indistinguishable). Mean ± std over seeds {', '.join(map(str, seeds))} (std: sample "
    f"standard deviation, ddof={STD_DDOF}). Sweep wall time {wall_seconds:.1f} s ({trained} runs trained, "
    f"{len(runs) - trained} reused)."
  )


def _cell(stats: dict[str, Any] | None) -> str:
  if stats is None:
    return ""
  if stats["std"] is None:
    return f"{stats['mean']:.3f}"
  return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def format_markdown(table: dict[str, Any]) -> str:
  """table.md: the caption, then one row per model and a chance row per dataset and split."""
  headers = ["model", "config"] + [m["header"] for m in table["metrics"]]
  lines = [table["caption"], "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
  keys = [m["key"] for m in table["metrics"]]
  for row in table["rows"]:
    lines.append(
      "| "
      + " | ".join([row["description"] or row["model"], f"`{row['slug']}`"] + [_cell(row["metrics"][k]) for k in keys])
      + " |"
    )
  for c in table["chance"]:
    label = "chance" if len(table["chance"]) == 1 else f"chance ({c['dataset']}, {c['classification_split']})"
    lines.append(
      "| "
      + " | ".join([label, ""] + ["" if c["metrics"][k] is None else f"{c['metrics'][k]:.3f}" for k in keys])
      + " |"
    )
  return "\n".join(lines) + "\n"


def run_sweep(
  specs: Sequence[str],
  seeds: Sequence[int],
  workdir: str,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  overrides: Sequence[str] = (),
  train_fn: TrainFn | None = None,
) -> dict[str, Any]:
  """Trains or reuses every (config, seed), then writes and returns `table.json` (and `table.md`).

  Args:
    specs: config specs, `path/to/config.py[:arg]`.
    seeds: training seeds.
    workdir: the sweep directory.
    data_dir: TFDS data dir for every run (None: each config's).
    manual_dir: EmoMV copy for every run (None: each config's, then $EMOMV_DIR).
    overrides: `key=value` config overrides for every run.
    train_fn: trains one run (default `train.train_and_evaluate`; tests count calls through it).

  Returns:
    The table dict written to `workdir/table.json`.
  """
  t_start = time.time()
  if not specs:
    raise cli.ToolError("no configs: pass --configs=path/to/config.py[:arg] (repeatable)")
  for spec in specs:  # fail on a bad config or override before hours of training
    make_config(spec, 0, overrides=overrides)
  slugs = [config_slug(s) for s in specs]
  if len(set(slugs)) != len(slugs):
    raise cli.ToolError(f"--configs lists the same config twice: {specs}")
  runs = []
  for spec, slug in zip(specs, slugs):
    for seed in seeds:
      run_dir = os.path.join(workdir, slug, f"seed_{seed}")
      runs.append(
        run_one(spec, seed, run_dir, data_dir=data_dir, manual_dir=manual_dir, overrides=overrides, train_fn=train_fn)
      )
  table = summarize(runs, seeds=seeds, wall_seconds=time.time() - t_start)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "table.json"), "w", encoding="utf-8") as f:
    json.dump(table, f, indent=2)
  with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
    f.write(format_markdown(table))
  return table


def main(argv: list[str] | None = None) -> None:
  """The command line: parses flags, runs the sweep, prints the table and its wall time."""
  cli.start_tool(_FLAGS, argv, HELP, compilation_cache=_CACHE)

  def body():
    seeds = cli.parse_ints(_SEEDS.value, "seeds")
    table = run_sweep(
      split_config_specs(_CONFIGS.value),
      seeds,
      _WORKDIR.value,
      data_dir=_DATA_DIR.value,
      manual_dir=_MANUAL_DIR.value,
      overrides=_OVERRIDES.value,
    )
    print(format_markdown(table))
    print(
      f"Sweep wall time: {table['wall_seconds']:.1f} s; wrote {os.path.join(_WORKDIR.value, 'table.md')} and table.json"
    )

  cli.run_tool(body)


if __name__ == "__main__":
  main()
