"""EMVGAN's defaults tuned on held-out parts of EmoMV-C train, never on validation: the library of `emvgan-tune`.

Every candidate (a named set of config overrides on `config_lib.base_config()`, i.e. on the current defaults)
and every EmoMV baseline is trained on each (holdout seed, training seed) pair with `data.holdout_fraction=0.2`:
the validation split and the retrieval gallery are replaced by a held-out share of train, grouped by YouTube id
(about 72 pairs and a 71-item gallery), so the real validation split and gallery are never read, neither for
early stopping nor for the numbers. Baselines train exactly as `configs/emomv_baseline.py` says, on the same
holdouts.

`run_tuning` writes `<workdir>/tuning.md`, two tables:
  1. per setting, mean (std) over the runs of v->m / m->v label mAP and hit@1 and ROC-AUC, the selected and the
     total number of steps, and seconds per run;
  2. per EMVGAN setting, the paired difference to the best baseline per metric (the baseline variant with the
     best mean, paired on the same holdout and training seed): mean +- standard error, and the share of runs it
     wins.
Every run has its own workdir `<workdir>/<name>-<hash of the overrides>/h<holdout>_s<seed>`; a finished run
whose stored config is the same run is read back instead of retrained (an interrupted run resumes from its latest
checkpoint), so an interrupted tuning resumes and a larger one reuses a smaller one's runs. Stds are sample
standard deviations (ddof 1), as in the sweep.

docs/models.md, section 3, records how the defaults were chosen with it (what was tried, the finalists and their
holdout numbers).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from emvgan_jax import atomic, config_lib, train
from emvgan_jax.evaluation import ensemble as ensemble_lib
from emvgan_jax.experiments import runs as experiments

# The EMVGAN defaults before tuning, as overrides on the tuned defaults of config_lib.
PRE_TUNING = {
  "emvgan.dropout_rate": 0.1,
  "loss.temperature": 0.1,
  "loss.w_nce": 1.0,
  "loss.adv_mode": "confusion",
  "optim.learning_rate": 1e-3,
  "optim.weight_decay": 1e-4,
}

_SELECT_MAP = {"train.selection_metric": "gallery/map", "train.selection_mode": "max"}

# The candidate grids: name -> config overrides on config_lib.base_config() (the current defaults).
GRIDS: dict[str, dict[str, dict[str, Any]]] = {
  "default": {
    "tuned defaults": {},
    "pre-tuning defaults": PRE_TUNING,
    "dropout 0.5": {"emvgan.dropout_rate": 0.5},  # the cheaper runner-up
    # One tuned change undone at a time.
    "dropout 0.1": {"emvgan.dropout_rate": 0.1},
    "temperature 0.1": {"loss.temperature": 0.1},
    "lr 1e-3, wd 1e-4": {"optim.learning_rate": 1e-3, "optim.weight_decay": 1e-4},
    "adv 'confusion'": {"loss.adv_mode": "confusion"},
    "w_nce 1": {"loss.w_nce": 1.0},
    # Ablations.
    "no adversarial term": {"loss.w_adv": 0.0},
    "no emotion positives": {"loss.emotion_positives": False},
  },
  # Does any adversarial variant close the modality gap? On top of the defaults (docs/models.md, section 5).
  "alignment": {
    "tuned defaults": {},
    "no adversarial term": {"loss.w_adv": 0.0},
    "decay kernels": {"optim.decay_mask": "kernels"},
    "confusion": {"loss.adv_mode": "confusion"},
    "reversal": {"loss.adv_mode": "reversal"},
    "cond emotion flip": {"loss.adv_condition": "emotion"},
    "cond emotion confusion": {"loss.adv_condition": "emotion", "loss.adv_mode": "confusion"},
    "cond emotion reversal": {"loss.adv_condition": "emotion", "loss.adv_mode": "reversal"},
    "cond prediction flip": {"loss.adv_condition": "prediction"},
    "confusion w_adv 1": {"loss.adv_mode": "confusion", "loss.w_adv": 1.0},
    "cond emotion confusion w_adv 1": {
      "loss.adv_condition": "emotion",
      "loss.adv_mode": "confusion",
      "loss.w_adv": 1.0,
    },
    "clean inputs": {"loss.adv_inputs": "clean"},
    "clean confusion": {"loss.adv_inputs": "clean", "loss.adv_mode": "confusion"},
    "clean confusion w_adv 1": {"loss.adv_inputs": "clean", "loss.adv_mode": "confusion", "loss.w_adv": 1.0},
    "clean cond emotion confusion w_adv 1": {
      "loss.adv_inputs": "clean",
      "loss.adv_condition": "emotion",
      "loss.adv_mode": "confusion",
      "loss.w_adv": 1.0,
    },
    "dropout 0 no adv": {"emvgan.dropout_rate": 0.0, "loss.w_adv": 0.0},
    "dropout 0 flip": {"emvgan.dropout_rate": 0.0},
    "dropout 0 confusion w_adv 1": {"emvgan.dropout_rate": 0.0, "loss.adv_mode": "confusion", "loss.w_adv": 1.0},
    "confusion, D lr 1e-4": {"loss.adv_mode": "confusion", "optim.disc_learning_rate": 0.0001},
    "confusion w_adv 1, D lr 1e-4": {
      "loss.adv_mode": "confusion",
      "loss.w_adv": 1.0,
      "optim.disc_learning_rate": 0.0001,
    },
    "flip, R1 1": {"loss.r1_weight": 1.0},
    "confusion w_adv 1, R1 1": {"loss.adv_mode": "confusion", "loss.w_adv": 1.0, "loss.r1_weight": 1.0},
    "confusion w_adv 1, n_disc 5": {"loss.adv_mode": "confusion", "loss.w_adv": 1.0, "optim.n_disc": 5},
    "reversal w_adv 1, D lr 1e-4": {"loss.adv_mode": "reversal", "loss.w_adv": 1.0, "optim.disc_learning_rate": 0.0001},
    # A linear discriminator: the model class of the modality probe, so fooling it is what the probe measures.
    "linear D flip": {"emvgan.disc_hidden": 0},
    "linear D confusion w_adv 1": {"emvgan.disc_hidden": 0, "loss.adv_mode": "confusion", "loss.w_adv": 1.0},
    "linear D reversal w_adv 1": {"emvgan.disc_hidden": 0, "loss.adv_mode": "reversal", "loss.w_adv": 1.0},
    "linear D clean confusion w_adv 1": {
      "emvgan.disc_hidden": 0,
      "loss.adv_inputs": "clean",
      "loss.adv_mode": "confusion",
      "loss.w_adv": 1.0,
    },
    # Moment matching beside (or instead of) the adversary: is the gap closable at all, and at what cost?
    "gap 1": {"loss.w_gap": 1.0},
    "gap 10": {"loss.w_gap": 10.0},
    "gap 10 no adv": {"loss.w_gap": 10.0, "loss.w_adv": 0.0},
  },
  # Selection metric, decay mask and the valence-arousal term (docs/models.md, section 3.3). Run it with
  # --selection_fraction=0.2: checkpoints are then chosen on rows apart from the ones the numbers come from, so
  # a selector is not judged on the split it selected on.
  "selection": {
    "tuned defaults": {},
    "select gallery/map": {"train.selection_metric": "gallery/map", "train.selection_mode": "max"},
    "select pairs/roc_auc": {"train.selection_metric": "pairs/roc_auc", "train.selection_mode": "max"},
    "decay kernels": {"optim.decay_mask": "kernels"},
    "va 0.3": {"loss.w_va": 0.3},
    "va 1": {"loss.w_va": 1.0},
    "va 1, select gallery/map": {
      "loss.w_va": 1.0,
      "train.selection_metric": "gallery/map",
      "train.selection_mode": "max",
    },
    "no adversarial term": {"loss.w_adv": 0.0},
  },
  # The selection grid's best, on more holdouts (`--holdout_seeds=0,...,9 --selection_fraction=0.2`).
  "selection_finalists": {
    "tuned defaults": {},
    "select gallery/map": _SELECT_MAP,
    "va 1, select gallery/map": {"loss.w_va": 1.0, **_SELECT_MAP},
    "va 0.3, select gallery/map": {"loss.w_va": 0.3, **_SELECT_MAP},
  },
  "none": {},
}

# The metrics of the tables: (path in results.json, column title).
METRICS = (
  (("retrieval", "video_to_music", "map"), "v->m mAP"),
  (("retrieval", "music_to_video", "map"), "m->v mAP"),
  (("retrieval", "video_to_music", "hit@1"), "v->m hit@1"),
  (("retrieval", "music_to_video", "hit@1"), "m->v hit@1"),
  (("classification", "roc_auc"), "ROC-AUC"),
)
# How far the common space is from closing the modality gap (shown, not compared: lower gap is better).
ALIGNMENT_METRICS = (
  (("alignment", "centroid_gap"), "modality gap"),
  (("alignment", "modality_probe_accuracy"), "modality probe"),
)


def make_config(
  kind: str,
  overrides: dict[str, Any],
  *,
  holdout_seed: int,
  seed: int,
  holdout_fraction: float,
  manual_dir: str | None = None,
  data_dir: str | None = None,
) -> ml_collections.ConfigDict:
  """The config of one run: EMVGAN (kind 'emvgan') or a baseline variant, on a holdout of EmoMV-C train."""
  if kind == "emvgan":
    config = config_lib.base_config()
  else:
    config = config_lib.load_config_file(f"configs/emomv_baseline.py:c,{kind}")
  config.data.dataset = "emomv/c"
  config.data.manual_dir = manual_dir
  config.data.data_dir = data_dir
  config.data.holdout_fraction = holdout_fraction
  config.data.holdout_seed = holdout_seed
  config.data.selection_seed = holdout_seed  # used only with data.selection_fraction > 0
  config.seed = seed
  config.train.progress_bar = False
  if "plots" in config.train:
    config.train.plots = False
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  return config


def run_dir(name: str, kind: str, overrides: dict[str, Any]) -> str:
  digest = hashlib.sha1(json.dumps([kind, overrides], sort_keys=True).encode()).hexdigest()[:8]
  slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
  return f"{slug}-{digest}"


def train_one(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains one run, or reads back a finished one of the same config; returns its results and 'total_steps'."""

  def train_quietly(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):  # training prints its results table; ours is enough
      results = train.train_and_evaluate(config, workdir)
    logging.info("%s: %.1f s", workdir, time.time() - t0)
    return results

  results, _ = experiments.train_or_reuse(config, workdir, train_fn=train_quietly, on_mismatch="retrain")
  total = 0
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      total = max(total, json.loads(line)["step"])
  return {**results, "total_steps": total}


def _get(results: dict[str, Any], path: Sequence[str]) -> float:
  value = experiments.get_path(results, path)
  return float("nan") if value is None else value


def summarize(runs: dict[tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
  """Per-metric values (keyed like `runs`), means and stds, steps and seconds of one setting's runs."""
  every = METRICS + ALIGNMENT_METRICS
  out: dict[str, Any] = {"values": {t: {k: _get(r, p) for k, r in runs.items()} for p, t in every}}
  for _, t in every:
    stats = experiments.mean_std(list(out["values"][t].values()))
    out[t], out[f"{t} std"] = stats["mean"], float("nan") if stats["std"] is None else stats["std"]
  out["best step"] = float(np.mean([r["checkpoint_step"] for r in runs.values()]))
  out["steps"] = float(np.mean([r["total_steps"] for r in runs.values()]))
  out["seconds"] = float(np.mean([r["train_seconds"] for r in runs.values()]))
  out["runs"] = len(runs)
  return out


def format_tables(rows: dict[str, dict[str, Any]], header: str) -> str:
  """The two markdown tables of tuning.md (see the module docstring)."""
  titles = [t for _, t in METRICS]
  base = {n: s for n, s in rows.items() if n.startswith("baseline")}
  best = {}  # metric -> (baseline name, mean)
  for t in titles:
    scored = [(s[t], n) for n, s in base.items() if not np.isnan(s[t])]
    if scored:
      best[t] = max(scored)[::-1]
  shown = titles + [t for _, t in ALIGNMENT_METRICS]
  lines = [
    header,
    "",
    "| setting | " + " | ".join(shown) + " | best step | steps | s/run | runs |",
    "|---|" + "---|" * (len(shown) + 4),
  ]
  for name, s in rows.items():
    cells = ["-" if np.isnan(s[t]) else f"{s[t]:.3f} ({s[t + ' std']:.3f})" for t in shown]
    lines.append(
      f"| {name} | " + " | ".join(cells) + f" | {s['best step']:.0f} | {s['steps']:.0f} | "
      f"{s['seconds']:.1f} | {s['runs']} |"
    )
  if not best:  # no baseline trained (--baselines=): nothing to pair with
    return "\n".join([*lines, "", "No baseline was trained (--baselines=), so there are no paired differences."])
  lines += [
    "",
    "Paired difference to the best baseline per metric ("
    + ", ".join(f"{t}: {n.removeprefix('baseline ')} {m:.3f}" for t, (n, m) in best.items())
    + "), same holdout and training seed: mean +- standard error [share of runs won].",
    "",
    "| setting | " + " | ".join(titles) + " | worst mean difference |",
    "|---|" + "---|" * (len(titles) + 1),
  ]
  for name, s in rows.items():
    if name in base:
      continue
    cells, means = [], []
    for t in titles:
      if t not in best:
        cells.append("-")
        continue
      ref = base[best[t][0]]["values"][t]
      d = np.asarray([v - ref[k] for k, v in s["values"][t].items() if k in ref])
      se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
      cells.append(f"{d.mean():+.3f} +- {se:.3f} [{np.mean(d > 0):.2f}]")
      means.append(d.mean())
    worst = f"{min(means):+.3f}" if means else "-"
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {worst} |")
  return "\n".join(lines)


def _ensembles(
  runs: dict[tuple[int, int], dict[str, Any]],
  folder: str,
  holdouts: Sequence[int],
  seeds: Sequence[int],
  data_dir: str | None,
  manual_dir: str | None,
) -> dict[str, Any]:
  """`summarize` of one setting's seed ensembles, one per holdout (keyed by its first seed, so that the paired
  differences meet the baselines' runs of that seed)."""
  out = {}
  for h in holdouts:
    mine = [runs[(h, s)] for s in seeds]
    results = ensemble_lib.ensemble_results(
      [os.path.join(folder, f"h{h}_s{s}") for s in seeds], data_dir=data_dir, manual_dir=manual_dir
    )
    out[(h, seeds[0])] = {
      **results,
      "checkpoint_step": float(np.mean([r["checkpoint_step"] for r in mine])),
      "total_steps": float(np.mean([r["total_steps"] for r in mine])),
      "train_seconds": float(np.sum([r["train_seconds"] for r in mine])),
    }
  return summarize(out)


def run_tuning(
  *,
  workdir: str,
  holdouts: Sequence[int],
  seeds: Sequence[int],
  candidates: dict[str, dict[str, Any]],
  baselines: Sequence[str],
  holdout_fraction: float,
  manual_dir: str | None = None,
  data_dir: str | None = None,
  selection_fraction: float = 0.0,
  ensemble: bool = False,
) -> str:
  """Trains (or reuses) every setting on every (holdout, seed); writes and returns `tuning.md`. With `ensemble`,
  each EMVGAN setting also gets a row of its seeds scored as one model on each holdout (`evaluation/ensemble.py`)."""
  t_start = time.time()
  # The selection holdout is one more override of every run, so that its runs have workdirs of their own.
  extra = {"data.selection_fraction": selection_fraction} if selection_fraction > 0 else {}
  jobs = [(f"baseline {v}", v, dict(extra)) for v in baselines]
  jobs += [(name, "emvgan", {**extra, **overrides}) for name, overrides in candidates.items()]
  rows = {}
  for name, kind, overrides in jobs:
    runs = {}
    for h in holdouts:
      for s in seeds:
        config = make_config(
          kind,
          overrides,
          holdout_seed=h,
          seed=s,
          holdout_fraction=holdout_fraction,
          manual_dir=manual_dir,
          data_dir=data_dir,
        )
        runs[(h, s)] = train_one(config, os.path.join(workdir, run_dir(name, kind, overrides), f"h{h}_s{s}"))
    rows[name] = summarize(runs)
    logging.info("%s: %s", name, {t: round(rows[name][t], 3) for _, t in METRICS})
    if ensemble and kind == "emvgan" and len(seeds) > 1:
      folder = os.path.join(workdir, run_dir(name, kind, overrides))
      rows[f"{name} (ensemble of {len(seeds)} seeds)"] = _ensembles(runs, folder, holdouts, seeds, data_dir, manual_dir)
  header = (
    f"EMVGAN tuning on EmoMV-C train holdouts (fraction {holdout_fraction}, grouped by YouTube id; "
    f"holdout seeds {list(holdouts)} x training seeds {list(seeds)} = {len(holdouts) * len(seeds)} runs per "
    "setting); mean (sample std) over runs; "
    + (
      f"checkpoints selected on a further grouped holdout of {selection_fraction:.0%} of the remaining train rows, "
      "numbers on the held-out part"
      if selection_fraction > 0
      else "early stopping and numbers on the held-out part"
    )
    + f" (validation and its gallery are never read). Wall time of this tuning: {(time.time() - t_start) / 60:.1f} min."
  )
  table = format_tables(rows, header)
  os.makedirs(workdir, exist_ok=True)
  atomic.write_text(os.path.join(workdir, "tuning.md"), table + "\n")
  return table
