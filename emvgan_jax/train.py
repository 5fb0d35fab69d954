"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

One loop for both model families. Each step is `jax.jit`-compiled once with explicit in/out shardings over the
mesh (batch on `data`, parameters replicated or sharded by rule) and donated state. Data order is a function of
(seed, epoch) and step randomness of (seed, step), so resuming from the latest checkpoint in the workdir gives
the same run as never stopping.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emvgan_jax import checkpoint as ckpt_lib
from emvgan_jax import evaluation, input_pipeline, model_zoo, sharding
from emvgan_jax.models import count_params


class NonFiniteLossError(FloatingPointError):
  """A train step produced a NaN or infinite loss; the run stops and writes no checkpoint."""


@dataclasses.dataclass
class Data:
  """The standardised splits a run uses, and the names of the splits they came from."""

  train: input_pipeline.Split
  pairs: input_pipeline.Split  # selection and classification split
  gallery: input_pipeline.Split | None
  standardizer: input_pipeline.Standardizer
  pairs_name: str
  gallery_name: str | None


def manual_dir_from(config: ml_collections.ConfigDict) -> str | None:
  return config.data.manual_dir or os.environ.get("EMOMV_DIR") or None


def load_data(config: ml_collections.ConfigDict, standardizer: input_pipeline.Standardizer | None = None) -> Data:
  """Loads the dataset named in the config and standardises it with train statistics.

  With `config.data.holdout_fraction > 0` the validation split and gallery are replaced by a held-out part of
  train (grouped by YouTube id) and the gallery built from it: the real validation split is never read.
  """
  splits = input_pipeline.load_dataset(config.data.dataset, data_dir=config.data.data_dir,
                                       manual_dir=manual_dir_from(config))
  train = splits["train"]
  if config.data.holdout_fraction > 0:
    train, held = input_pipeline.holdout_split(train, fraction=config.data.holdout_fraction,
                                               seed=config.data.holdout_seed)
    pairs, gallery = held, input_pipeline.gallery_from_pairs(held)
    pairs_name, gallery_name = "train-holdout", "train-holdout-gallery"
  else:
    pairs_name = "validation"
    pairs, gallery, gallery_name = splits["validation"], splits.get("gallery"), "gallery"
  standardizer = standardizer or input_pipeline.Standardizer.fit(train)
  apply = standardizer.apply
  return Data(train=apply(train), pairs=apply(pairs), gallery=apply(gallery) if gallery is not None else None,
              standardizer=standardizer, pairs_name=pairs_name, gallery_name=gallery_name)


def create_state(family: model_zoo.Family, config, mesh, video_dim: int, music_dim: int):
  """Initial state, created directly in its shardings; returns (state, state_shardings)."""
  init = lambda rng: family.init(rng, video_dim, music_dim)  # noqa: E731
  abstract = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding.tree_shardings(abstract, mesh, config.sharding.param_rule, config.sharding.min_shard_size)
  state = jax.jit(init, out_shardings=shardings)(jax.random.key(config.seed))
  return state, shardings


def compile_train_step(family: model_zoo.Family, mesh, state_shardings):
  """The train step jitted once: explicit shardings, donated state."""
  return jax.jit(
      family.train_step,
      in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,),
  )


class _Selection:
  """Early-stopping bookkeeping on the configured selection metric."""

  def __init__(self, metric: str, mode: str, patience: int):
    if mode not in ("min", "max"):
      raise ValueError(f"config.train.selection_mode must be 'min' or 'max', got {mode!r}")
    self.metric, self.mode, self.patience = metric, mode, patience
    self.best_value: float | None = None
    self.best_step: int | None = None
    self.bad_evals = 0

  def update(self, value: float, step: int) -> bool:
    """Records one evaluation; returns whether it is a new best."""
    better = self.best_value is None or (value < self.best_value if self.mode == "min" else value > self.best_value)
    if better:
      self.best_value, self.best_step, self.bad_evals = value, step, 0
    else:
      self.bad_evals += 1
    return better

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.bad_evals >= self.patience

  def to_json(self) -> dict[str, Any]:
    return {"best_value": self.best_value, "best_step": self.best_step, "bad_evals": self.bad_evals}

  def load(self, d: dict[str, Any]):
    self.best_value, self.best_step, self.bad_evals = d["best_value"], d["best_step"], d["bad_evals"]


class _Writer:
  """Scalars to W/metrics.jsonl and TensorBoard event files (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool):
    self.enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: dict[str, float]):
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")
    self._jsonl.flush()
    for k, v in scalars.items():
      self._tb.add_scalar(k.replace("@", "_at_"), float(v), step)  # TensorBoard tags may not contain '@'


  def close(self):
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


_GUARDED = ("grad_norm", "param_norm")
_THRESHOLD_METRICS = ("validation/accuracy", "validation/f1")


def _check_finite(step_metrics: list[tuple[int, dict[str, Any]]]):
  """Raises NonFiniteLossError on the first step whose losses (or gradient/parameter norms) are not finite."""
  for step, m in step_metrics:
    bad = [k for k, v in m.items() if (k.startswith("loss") or k in _GUARDED) and not np.isfinite(v)]
    if bad:
      raise NonFiniteLossError(
          f"Non-finite loss at step {step}: {', '.join(f'{k}={m[k]}' for k in bad)}. The run stopped and wrote no "
          "checkpoint; lower the learning rate or check the inputs (the latest good checkpoint is unchanged).")


def host_float(x: jax.Array) -> float:
  """A replicated scalar on the host (reads this process's shard: works on every process of a multi-host run)."""
  return float(np.asarray(x.addressable_data(0)))


def host_int(x: jax.Array) -> int:
  return int(np.asarray(x.addressable_data(0)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the configured model with early stopping, then evaluates the best checkpoint.

  Resumes from the latest checkpoint in `workdir` if there is one. Writes `workdir/config.json`,
  `metrics.jsonl`, TensorBoard events, `checkpoints/{latest,best}` and finally `results.json`.

  Returns:
    The results dict that was written to `workdir/results.json`.
  """
  t_start = time.time()
  is_lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_lead:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  mesh = sharding.make_mesh(config.sharding.mesh_shape)
  family = model_zoo.build(config)
  data = load_data(config)
  logging.info("Data %s: train %d, %s %d, %s %s", config.data.dataset, len(data.train), data.pairs_name,
               len(data.pairs), data.gallery_name, len(data.gallery) if data.gallery is not None else "-")

  batch_size = config.train.batch_size
  n_data = mesh.shape[sharding.DATA_AXIS]
  if batch_size % n_data:
    raise ValueError(f"config.train.batch_size={batch_size} is not divisible by the {n_data} devices of the mesh's "
                     "data axis")
  state, state_shardings = create_state(family, config, mesh, data.train.video_dim, data.train.music_dim)
  n_params = count_params(state.params)
  logging.info("%s: %s parameters; mesh %s over %d devices (%s)", family.description, f"{n_params:,}",
               dict(mesh.shape), jax.device_count(), jax.devices()[0].platform)
  train_step = compile_train_step(family, mesh, state_shardings)
  evaluator = evaluation.Evaluator(family, mesh, batch_size=config.train.eval_batch_size)
  # Made by a jitted function so it is a global array on every process (device_put cannot place a value on
  # another process's devices).
  rng_train = jax.jit(lambda: jax.random.fold_in(jax.random.key(config.seed), 1),
                      out_shardings=sharding.replicated(mesh))()

  checkpoints = ckpt_lib.Checkpoints(workdir)
  selection = _Selection(config.train.selection_metric, config.train.selection_mode, config.train.patience)
  stats = data.standardizer.to_dict()
  steps_per_epoch = input_pipeline.num_train_steps_per_epoch(len(data.train), batch_size,
                                                             config.train.drop_remainder)
  max_steps = config.train.num_epochs * steps_per_epoch
  if config.train.max_steps > 0:
    max_steps = min(max_steps, config.train.max_steps)
  abstract_state = ckpt_lib.abstract_like(state)

  # --- resume ------------------------------------------------------------------------------------------------
  stopped_early = False
  if checkpoints.latest_step() is not None:
    _, state, _, restored_meta = checkpoints.restore("latest", abstract_state)
    selection.load(restored_meta["selection"])
    stopped_early = restored_meta.get("stopped_early", False)
    logging.info("Resumed from the latest checkpoint at step %d in %s", host_int(state.step), workdir)
  step = host_int(state.step)
  # The data order depends only on (seed, epoch): a run resumed mid-epoch skips the batches it already took.
  epoch, offset = divmod(step, steps_per_epoch)
  copy_state = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_shardings)
  best = None  # (step, on-device copy of the best state) since the last save

  def meta(done: bool = False) -> dict[str, Any]:
    # `stopped_early` means early stopping fired; reaching max_steps does not stop a resumed, longer run.
    return {"selection": selection.to_json(), "stopped_early": done, "model": family.name,
            "description": family.description, "dataset": config.data.dataset, "seed": config.seed,
            "steps_per_epoch": steps_per_epoch, "config": json.loads(config.to_json_best_effort()),
            "num_params": n_params}

  def save(done: bool = False):
    flush()  # raises before anything is written if a loss went non-finite
    checkpoints.save("latest", step, state=state, stats=stats, meta=meta(done))
    if best is not None:
      checkpoints.save("best", best[0], state=best[1], stats=stats, meta=meta(done))

  writer = _Writer(workdir, enabled=is_lead)
  eval_every = config.train.eval_every_steps
  log_every = max(1, config.train.log_every_steps)
  pending: list[tuple[int, dict[str, jax.Array]]] = []
  progress = None
  if is_lead and config.train.progress_bar:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    # In a log file (not a terminal) a line every 30 s is progress enough.
    progress = tqdm(total=max_steps, initial=step, desc="train", unit="step", file=sys.stderr,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
  t_window, step_window = time.time(), step

  def flush() -> dict[str, float]:
    """Fetches pending step metrics, stops on non-finite loss, logs their mean."""
    nonlocal t_window, step_window
    if not pending:
      return {}
    host = [(s, {k: host_float(v) for k, v in m.items()}) for s, m in pending]
    pending.clear()
    _check_finite(host)
    mean = {f"train/{k}": float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
    last_step = host[-1][0]
    now = time.time()
    mean["train/steps_per_sec"] = (last_step - step_window) / max(now - t_window, 1e-9)
    t_window, step_window = now, last_step
    writer.write(last_step, mean)
    if progress is not None:
      progress.set_postfix(loss=f"{mean['train/loss']:.4f}", steps_s=f"{mean['train/steps_per_sec']:.1f}",
                           epoch=epoch, refresh=False)  # tqdm redraws at its own pace, not every log step
    return mean

  def run_eval() -> bool:
    """Evaluates, records, and keeps a copy of the best state; returns whether to stop early."""
    nonlocal best
    flush()
    # A cosine-scored model's accuracy and F1 need a threshold fitted on train (a pass over train per
    # evaluation); it is only fitted when selection uses them, and otherwise those two are not logged per epoch.
    threshold = None
    if not family.score_is_probability and selection.metric in _THRESHOLD_METRICS:
      threshold = _train_threshold(evaluator, state, data)
    flat, _ = evaluator.evaluate(state, pair_split=data.pairs, gallery=data.gallery, threshold=threshold,
                                 threshold_free_only=not family.score_is_probability and threshold is None)
    if selection.metric not in flat:
      raise KeyError(f"config.train.selection_metric={selection.metric!r} is not computed; choose one of "
                     f"{sorted(flat)}")
    if selection.update(flat[selection.metric], step):
      best = (step, copy_state(state))
    writer.write(step, {**flat, "selection/best": selection.best_value})
    return selection.should_stop

  # --- train ---------------------------------------------------------------------------------------------------
  batch_shard = sharding.batch_sharding(mesh)
  try:
    while not stopped_early and step < max_steps:
      # The published code's RNG quirk (config.baseline.published_rng_quirk) repeats one order every epoch.
      order_epoch = 0 if config.model == "baseline" and config.baseline.published_rng_quirk else epoch
      ds = input_pipeline.train_dataset(data.train, global_batch_size=batch_size, seed=config.seed,
                                        epoch=order_epoch, drop_remainder=config.train.drop_remainder)
      for i in range(offset, len(ds)):
        state, metrics = train_step(state, input_pipeline.make_global_batch(ds[i], batch_shard), rng_train)
        step += 1
        pending.append((step, metrics))
        if progress is not None:
          progress.update(1)
        if step % log_every == 0:
          flush()
        if eval_every and step % eval_every == 0:
          stopped_early = run_eval()
        if i == len(ds) - 1:  # the epoch is complete
          epoch, offset = epoch + 1, 0
          if not eval_every:
            stopped_early = run_eval()
          if epoch % config.train.checkpoint_every_epochs == 0:
            save()
        if stopped_early or step >= max_steps:
          break
    if best is None and selection.best_step is None:  # never evaluated (e.g. max_steps=0): evaluate now
      run_eval()
    save(done=stopped_early)
  finally:
    if progress is not None:
      progress.close()
    writer.close()
  checkpoints.wait()
  if stopped_early:
    logging.info("Early stopping at step %d: %s did not improve for %d evaluations (best %.4f at step %d)",
                 step, selection.metric, selection.patience, selection.best_value, selection.best_step)

  # --- final evaluation of the best checkpoint ----------------------------------------------------------------
  best_step, best_state, _, _ = checkpoints.restore("best", abstract_state)
  checkpoints.close()
  results = final_results(config, family, evaluator, best_state, data, checkpoint_step=best_step,
                          selection=selection)
  results["train_seconds"] = round(time.time() - t_start, 2)
  if is_lead:
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)
    print(evaluation.format_table(results), flush=True)
  if config.train.plots:
    _write_plots(config, family, evaluator, best_state, data, results, workdir)
  return results


def _write_plots(config, family, evaluator, state, data: Data, results, workdir: str):
  """Training curves, precision-recall, the PCA map of the common space and the confusion matrix: W/plots."""
  from emvgan_jax import plots  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)

  emb = None
  if family.has_retrieval and data.gallery is not None:
    emb = evaluation.gallery_embeddings(evaluator, state, data.gallery)
  pairs = evaluation.pair_predictions(evaluator, state, data.pairs, results["classification"]["threshold"])
  if jax.process_index() == 0:
    plots.write_training_plots(workdir, embeddings=emb, pair_predictions=pairs, results=results,
                               title=f"{family.description} on {config.data.dataset}")


def _train_threshold(evaluator: evaluation.Evaluator, state, data: Data) -> float:
  """For cosine-scored models: the threshold with the best accuracy on the train split."""
  pred = evaluator.predict(state, data.train)
  return evaluation.choose_threshold(pred["score"], data.train.match)


def final_results(config, family: model_zoo.Family, evaluator: evaluation.Evaluator, state, data: Data, *,
                  checkpoint_step: int, selection: _Selection | None = None) -> dict[str, Any]:
  """The results dict (schema of README/issue) of one state on the run's evaluation splits."""
  threshold = None if family.score_is_probability else _train_threshold(evaluator, state, data)
  _, structured = evaluator.evaluate(state, pair_split=data.pairs, gallery=data.gallery, threshold=threshold)
  results: dict[str, Any] = {
      "dataset": config.data.dataset,
      "model": family.name if config.model == "emvgan" else f"baseline_{config.baseline.task}_"
                                                            f"{'multi' if config.baseline.multitask else 'single'}",
      "description": family.description,
      "seed": config.seed,
      "checkpoint_step": int(checkpoint_step),
      "classification": {"split": data.pairs_name, "num_pairs": len(data.pairs),
                         "threshold": 0.5 if threshold is None else threshold,
                         "threshold_chosen_on": "fixed" if threshold is None else "train",
                         **structured["classification"]},
  }
  if "retrieval" in structured:
    results["retrieval"] = {"split": data.gallery_name, **structured["retrieval"]}
  chance = evaluation.chance_levels(data.pairs, data.gallery if "retrieval" in structured else None)
  results["chance"] = chance
  if selection is not None:
    results["selection"] = {"split": data.pairs_name, "metric": selection.metric, "mode": selection.mode,
                            "best_value": selection.best_value, "best_step": selection.best_step}
  return results
