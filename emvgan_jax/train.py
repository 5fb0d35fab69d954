"""The training loop: `train_and_evaluate(config, workdir)`.

Set-up, resume, the loop, restoring the best state, results. Everything a family does differently (its model,
optimisers, train and predict steps) is a field of its `families.Family`; the data comes from `data/`, the
evaluation protocol and the results schema from `evaluation.py`, and the run's bookkeeping from three small
objects in `runtime/`: a `MetricLogger` (metrics.jsonl, TensorBoard, progress, non-finite checks), the
`Selection` (early stopping, with its copy of the best state) and a `RunCheckpointer` (`latest` and `best`).

What exact resume relies on (a run resumed from `latest` is the same run as one never stopped):
  1. the data order is a function of (seed, epoch), and step randomness of (seed, step), nothing else;
  2. at the end of an epoch the loop evaluates first, then saves (every `checkpoint_every_epochs` epochs), so a
     checkpoint holds the state and the selection of the same instant;
  3. a resumed run restores step, state and selection, and re-enters the epoch at `step % steps_per_epoch`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from emvgan_jax import atomic, config_lib, families
from emvgan_jax.data import emomv, pipeline
from emvgan_jax.evaluation import peers, protocol
from emvgan_jax.models import count_params
from emvgan_jax.runtime import provenance, sharding
from emvgan_jax.runtime import workdir as workdir_lib
from emvgan_jax.runtime.checkpoint import RunCheckpointer
from emvgan_jax.runtime.logger import MetricLogger, NonFiniteLossError, flat_hparams, host_int
from emvgan_jax.runtime.preemption import Interrupted, Interrupts
from emvgan_jax.runtime.selection import Selection

__all__ = ["NonFiniteLossError", "compile_train_step", "create_state", "run", "train_and_evaluate"]


def init_compiler_options(platform: str) -> dict[str, Any]:
  """XLA options for the one-shot program that creates the initial state.

  It runs once, in milliseconds, so the backend's optimisations cost more than they could save: on this
  project's 2-core CPU, EMVGAN's init compiled in 2.9 s at the default level and 1.6 s at level 0 (the compile
  log of `JAX_LOG_COMPILES=1 python -m emvgan_jax.main --config=configs/emomv_c.py --compilation_cache_dir=`;
  the same random draws, floating-point results may differ in the last bit). Measured on CPU only, so only
  set there.
  """
  return {"xla_backend_optimization_level": 0} if platform == "cpu" else {}


# ------------------------------------------------------------------------------------------------------------
# Programs reused by the runs of one process.
#
# A sweep or a tuning session trains many runs in one process, most of them one config with another seed or
# other data (a fold, a holdout). Their family, initialiser, train step and predict step are the same programs:
# kept here, a later run calls the jitted functions an earlier run traced, lowered and compiled (jit's own cache,
# keyed by argument shapes and shardings), instead of tracing and lowering them again and fetching them from the
# persistent cache. The key is every config field except the seed and the data fields, which reach these programs
# only as arguments (the seed's key, the batches, the feature widths in the state's shapes), and the mesh. The
# same program on the same arguments gives the same bits, so a reused step trains exactly as a fresh one
# (tests/test_train.py).
# ------------------------------------------------------------------------------------------------------------

PROGRAMS_KEPT = 4  # configs whose programs a process keeps (a sweep's configs run one after another)
_programs: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()


def program_key(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Hashable:
  """What makes a run's programs: every config field except the seed and the data fields, and the mesh.

  Every other field is in it, not only those a program is known to read today (`train.accumulation_steps` shapes
  EMVGAN's step, `train.eval_batch_size` the evaluator's batches): a field that no program reads only costs reuse.
  """
  flat = workdir_lib.flatten(json.loads(config.to_json_best_effort()))
  fields = sorted(
    (k, json.dumps(v, sort_keys=True)) for k, v in flat.items() if k != "seed" and not k.startswith("data.")
  )
  return (tuple(fields), mesh)


def _reused(key: Hashable, make: Callable[[], Any]) -> Any:
  """The value kept for `key`, made (and kept, the least recently used of more than PROGRAMS_KEPT configs'
  programs dropped) where there is none."""
  if key in _programs:
    _programs.move_to_end(key)
    return _programs[key]
  _programs[key] = value = make()
  while len(_programs) > 4 * PROGRAMS_KEPT:  # family, initialiser, step and evaluator per config
    _programs.popitem(last=False)
  return value


def clear_programs() -> None:
  """Forgets every kept program: the next run traces and compiles its own."""
  _programs.clear()


def create_state(
  family: families.Family,
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  video_dim: int,
  music_dim: int,
  *,
  reuse: Hashable | None = None,
) -> tuple[families.TrainState, Any]:
  """The initial state, created directly in its shardings; returns (state, abstract state with shardings).

  With `reuse` (a `program_key`), the abstract state and the jitted initialiser are kept for later runs of it.
  """

  def make() -> tuple[Any, Any]:
    init = lambda rng: family.init(rng, video_dim, music_dim)  # noqa: E731
    abstract = sharding.abstract_state(init, mesh, config.sharding.param_rule, config.sharding.min_shard_size)
    options = init_compiler_options(mesh.devices.flat[0].platform)
    return abstract, jax.jit(init, out_shardings=sharding.shardings_of(abstract), compiler_options=options)

  abstract, jitted = make() if reuse is None else _reused(("init", reuse, video_dim, music_dim), make)
  return jitted(jax.random.key(config.seed)), abstract


def compile_train_step(family: families.Family, mesh: jax.sharding.Mesh, state_shardings: Any) -> Any:
  """The train step jitted once: explicit shardings, donated state, traced under `mesh` (so that a loss can
  shard its own work over the mesh, as `contrastive.logsumexps` does)."""

  def step(state: Any, batch: Any, rng: jax.Array) -> Any:
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return family.train_step(state, batch, rng)

  return jax.jit(
    step,
    in_shardings=(state_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )


@dataclasses.dataclass
class _Setup:
  """What a run is made of, before its first step."""

  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  family: families.Family
  data: emomv.RunData
  state: Any
  abstract_state: Any
  train_step: Any
  evaluator: protocol.Evaluator
  rng: jax.Array
  steps_per_epoch: int
  max_steps: int
  num_params: int


def check_config(config: ml_collections.ConfigDict) -> None:
  """Everything about `config` that can be checked before data is read or a file written.

  Raises:
    config_lib.ConfigError: a field out of range, an unknown dataset, model or selection metric, a batch that the
      mesh's data axis does not divide, or data protocol fields that do not go together.
  """
  config_lib.validate(config)
  try:
    family = families.build(config)
    emomv.check_protocol(config)
    mesh = sharding.make_mesh(config.sharding.mesh_shape)
  except ValueError as e:  # the model's own option checks, the protocol's, the mesh's
    raise config_lib.ConfigError(str(e)) from None
  names = protocol.selection_metric_names(family.has_retrieval)
  if config.train.selection_metric not in names:
    raise config_lib.ConfigError(
      f"config.train.selection_metric={config.train.selection_metric!r} is not computed for {family.description}; "
      f"choose one of {names}"
    )
  n_data = mesh.shape[sharding.DATA_AXIS]
  if config.train.batch_size % n_data:
    raise config_lib.ConfigError(
      f"config.train.batch_size={config.train.batch_size} is not divisible by the {n_data} devices of the mesh's "
      "data axis"
    )
  accum = config.train.accumulation_steps
  if accum > 1 and family.name != "emvgan":
    raise config_lib.ConfigError(
      f"config.train.accumulation_steps={accum}: gradient accumulation is built for EMVGAN only; use 1 for "
      f"{family.description}"
    )
  if config.train.batch_size % (n_data * accum):
    raise config_lib.ConfigError(
      f"config.train.accumulation_steps={accum}: the rows of config.train.batch_size={config.train.batch_size} "
      f"that each of the {n_data} devices holds must split into {accum} equal microbatches; make the batch a "
      f"multiple of {n_data * accum}"
    )


def _set_up(config: ml_collections.ConfigDict) -> _Setup:
  mesh = sharding.make_mesh(config.sharding.mesh_shape)
  key = program_key(config, mesh)
  family = _reused(("family", key), lambda: families.build(config))
  data = emomv.load_run_data(config)
  logging.info(
    "Data %s: train %d, %s %d, %s %s%s",
    config.data.dataset,
    len(data.train),
    data.pairs_name,
    len(data.pairs),
    data.gallery_name,
    len(data.gallery) if data.gallery is not None else "-",
    f"; selection on {data.selection_name} {len(data.selection)}" if data.selects_apart else "",
  )
  batch_size = config.train.batch_size  # its divisibility by the mesh was checked by `check_config`
  state, abstract = create_state(family, config, mesh, data.train.video_dim, data.train.music_dim, reuse=key)
  num_params = count_params(state.params)
  logging.info(
    "%s: %s parameters; mesh %s over %d devices (%s)",
    family.description,
    f"{num_params:,}",
    dict(mesh.shape),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  steps_per_epoch = pipeline.num_train_steps_per_epoch(len(data.train), batch_size, config.train.drop_remainder)
  max_steps = config.train.num_epochs * steps_per_epoch
  if config.train.max_steps > 0:
    max_steps = min(max_steps, config.train.max_steps)
  # Made by a jitted function so it is a global array on every process (device_put cannot place a value on
  # another process's devices).
  rng = jax.jit(lambda: jax.random.fold_in(jax.random.key(config.seed), 1), out_shardings=sharding.replicated(mesh))()
  shardings = sharding.shardings_of(abstract)
  return _Setup(
    config=config,
    mesh=mesh,
    family=family,
    data=data,
    state=state,
    abstract_state=abstract,
    train_step=_reused(
      ("step", key, jax.tree.structure(shardings), tuple(jax.tree.leaves(shardings))),
      lambda: compile_train_step(family, mesh, shardings),
    ),
    evaluator=_reused(
      ("evaluator", key), lambda: protocol.Evaluator(family, mesh, batch_size=config.train.eval_batch_size)
    ),
    rng=rng,
    steps_per_epoch=steps_per_epoch,
    max_steps=max_steps,
    num_params=num_params,
  )


class _Loop:
  """The epochs of one run: steps, evaluations with early stopping, and checkpoints (see the module docstring)."""

  def __init__(
    self,
    setup: _Setup,
    selection: Selection,
    logger: MetricLogger,
    checkpointer: RunCheckpointer,
    interrupts: Interrupts | None = None,
  ):
    self.s, self.selection, self.logger, self.checkpointer = setup, selection, logger, checkpointer
    self.interrupts = interrupts or Interrupts()
    self._last_save = time.time()

  def evaluate(self, state: Any, step: int) -> bool:
    """Evaluates, logs and updates the selection (and its best copy); returns whether to stop early."""
    self.logger.flush()
    flat = protocol.evaluate_for_selection(self.s.evaluator, state, self.s.data, self.selection.metric)
    self.selection.update(flat[self.selection.metric], step, state)
    self.logger.write(step, {**flat, "selection/best": self.selection.best_value})
    sel = self.selection
    self.logger.show_selection(best_step=sel.best_step, bad_evals=sel.bad_evals, patience=sel.patience)
    return self.selection.should_stop

  def save(self, state: Any, step: int, *, done: bool = False) -> None:
    # Raises before anything is written if a loss went non-finite; the unfinished log window travels along.
    window = self.logger.pending_json()
    self.checkpointer.save(step, state, selection=self.selection, done=done, extra={"log_window": window})
    self._last_save = time.time()

  def _time_to_save(self, step: int) -> bool:
    """Whether `train.checkpoint_every_seconds` have passed since the last save (decided by process 0)."""
    seconds = self.s.config.train.checkpoint_every_seconds
    if seconds <= 0:
      return False
    if jax.process_count() == 1:
      return time.time() - self._last_save >= seconds
    if step % self.logger.log_every:  # on several processes, only where they agree cheaply: log boundaries
      return False

    due = np.int32(time.time() - self._last_save >= seconds)
    return bool(multihost_utils.broadcast_one_to_all(due))

  def after_step(self, state: Any, step: int, epoch_done: bool) -> None:
    """Saves on the epoch or time cadence; on a signal, saves and raises `Interrupted`."""
    if self.interrupts.requested(step):
      self.save(state, step)
      raise Interrupted(self.interrupts.signum, step, self.checkpointer.workdir)
    by_epoch = epoch_done and (step // self.s.steps_per_epoch) % self.s.config.train.checkpoint_every_epochs == 0
    if by_epoch or self._time_to_save(step):
      self.save(state, step)

  def run(self, state: Any, stopped_early: bool) -> tuple[Any, int, bool]:
    """Trains from `state` to max_steps or early stopping; returns (state, step, stopped_early)."""
    config, train = self.s.config, self.s.config.train
    batch_shard = sharding.batch_sharding(self.s.mesh)
    step = host_int(state.step)
    # The data order depends only on (seed, epoch): a run resumed mid-epoch skips the batches it already took.
    epoch, offset = divmod(step, self.s.steps_per_epoch)
    while not stopped_early and step < self.s.max_steps:
      ds = pipeline.train_dataset(
        self.s.data.train,
        global_batch_size=train.batch_size,
        seed=config.seed,
        epoch=0 if self.s.family.fixed_data_order else epoch,
        drop_remainder=train.drop_remainder,
      )
      batches = pipeline.iterate(ds, offset, prefetch=self.s.data.train.on_disk)
      for i, batch in zip(range(offset, len(ds)), batches):
        state, metrics = self.s.train_step(state, pipeline.make_global_batch(batch, batch_shard), self.s.rng)
        step += 1
        self.logger.record_step(step, metrics, epoch=epoch)
        if train.eval_every_steps and step % train.eval_every_steps == 0:
          stopped_early = self.evaluate(state, step)
        epoch_done = i == len(ds) - 1
        if epoch_done:  # the epoch is complete: evaluate, then save (point 2 of the module docstring)
          epoch, offset = epoch + 1, 0
          if not train.eval_every_steps:
            stopped_early = self.evaluate(state, step)
        if stopped_early or step >= self.s.max_steps:
          break
        self.after_step(state, step, epoch_done)
    if not self.selection.ever_evaluated:  # never evaluated (e.g. max_steps=0): evaluate now
      self.evaluate(state, step)
    self.logger.flush()
    self.save(state, step, done=stopped_early)
    return state, step, stopped_early


def _run_meta(setup: _Setup) -> dict[str, Any]:
  """The static part of every checkpoint's metadata."""
  config, family = setup.config, setup.family
  return {
    "model": family.name,
    "description": family.description,
    "dataset": config.data.dataset,
    "seed": config.seed,
    "steps_per_epoch": setup.steps_per_epoch,
    "config": json.loads(config.to_json_best_effort()),
    "num_params": setup.num_params,
  }


def run(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False) -> dict[str, Any]:
  """Makes the run `config` describes in `workdir` and returns its results: the training loop below for a model
  that is trained, one fit for a peer (`evaluation/peers.py`). The one place that tells the two apart
  (`families.MODELS`)."""
  if families.model(config).trained:
    return train_and_evaluate(config, workdir, restart=restart)
  return peers.fit_and_evaluate(config, workdir, restart=restart)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, restart: bool = False) -> dict[str, Any]:
  """Trains the configured model with early stopping, then evaluates the best checkpoint.

  Resumes from the latest checkpoint in `workdir` if there is one (of the same run: `runtime/workdir.py`).
  Writes `workdir/config.json`, `metrics.jsonl`, TensorBoard events, `checkpoints/{latest,best}` and finally
  `results.json`. The workdir is locked for the duration.

  Args:
    config: the run's config.
    workdir: where the run lives.
    restart: delete what `workdir` holds and start over (else a workdir of another run is refused).

  Returns:
    The results dict that was written to `workdir/results.json`.

  Raises:
    workdir.WorkdirError: another process holds the workdir, or it holds another run.
    preemption.Interrupted: SIGTERM or SIGINT arrived; `latest` was saved at that step.
    NonFiniteLossError: a loss went non-finite; nothing was saved at or after that step.
  """
  check_config(config)
  lock = None
  if jax.process_index() == 0:
    lock = workdir_lib.claim(config, workdir, restart=restart)
    config_json = emomv.as_recorded(config).to_json_best_effort(indent=2, sort_keys=True)
    atomic.write_text(os.path.join(workdir, "config.json"), config_json)
  if jax.process_count() > 1:  # the others read the workdir once process 0 has checked (or cleared) it
    multihost_utils.sync_global_devices("workdir claimed")
  try:
    return _train_and_evaluate(config, workdir)
  finally:
    if lock is not None:
      lock.release()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  # --- set-up ----------------------------------------------------------------------------------------------------
  t_start = time.time()
  is_lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  logging.info("Workdir %s", os.path.abspath(workdir))  # as it resolved (a relative --workdir, a ~ or a $VAR)
  s = _set_up(config)
  copy_state = jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=sharding.shardings_of(s.abstract_state))
  selection = Selection(
    config.train.selection_metric, config.train.selection_mode, config.train.patience, copy_state=copy_state
  )
  checkpointer = RunCheckpointer(workdir, stats=s.data.standardizer.to_dict(), run_meta=_run_meta(s), started=t_start)

  # --- resume ----------------------------------------------------------------------------------------------------
  state, stopped_early, log_window = s.state, False, None
  restored = checkpointer.restore_latest(s.abstract_state)
  if restored is not None:
    state, meta = restored
    selection.load(meta["selection"])
    stopped_early, log_window = meta.get("stopped_early", False), meta.get("log_window")
    logging.info("Resumed from the latest checkpoint at step %d in %s", host_int(state.step), os.path.abspath(workdir))

  # --- the loop --------------------------------------------------------------------------------------------------
  logger = MetricLogger(
    workdir,
    enabled=is_lead,
    log_every=config.train.log_every_steps,
    total_steps=s.max_steps,
    initial_step=host_int(state.step),
    progress_bar=config.train.progress_bar,
    early_stopping=config.train.patience > 0,
  )
  logger.restore_pending(log_window)
  if restored is None:
    logger.log_hparams(flat_hparams(config.to_dict()), [selection.metric, "selection/best", "train/loss"])
  try:
    with Interrupts() as interrupts:
      state, step, stopped_early = _Loop(s, selection, logger, checkpointer, interrupts).run(state, stopped_early)
    logger.end_hparams_session()
  except BaseException:
    checkpointer.close()
    raise
  finally:
    logger.close()
  if stopped_early:
    logging.info(
      "Early stopping at step %d: %s did not improve for %d evaluations (best %.4f at step %d)",
      step,
      selection.metric,
      selection.patience,
      selection.best_value,
      selection.best_step,
    )
  else:
    logging.info("Trained to step %d of %d", step, s.max_steps)

  # --- restore the best state ------------------------------------------------------------------------------------
  best_step, best_state = checkpointer.restore_best(s.abstract_state, expected_step=selection.best_step)
  checkpointer.close()

  # --- results ---------------------------------------------------------------------------------------------------
  results = protocol.results(
    config,
    s.evaluator,
    best_state,
    s.data,
    checkpoint_step=best_step,
    selection=selection.results_block(s.data.selection_name),
  )
  # Across every process that worked on the run (a resumed run's earlier ones are in its checkpoint's metadata).
  results["train_seconds"] = round(checkpointer.seconds_before + time.time() - t_start, 2)
  results["provenance"] = provenance.collect(
    dataset=config.data.dataset, data_dir=config.data.data_dir, manual_dir=emomv.manual_dir_from(config)
  )
  if is_lead:
    atomic.write_json(os.path.join(workdir, "results.json"), results)
    print(protocol.format_table(results), flush=True)
  if config.train.plots:
    _write_plots(s, best_state, results, workdir)
  return results


def _write_plots(s: _Setup, state: Any, results: dict[str, Any], workdir: str) -> None:
  """Training curves, precision-recall, the PCA map of the common space and the confusion matrix (W/plots), and
  W/report.html, the page that shows them with the results."""
  from emvgan_jax.evaluation import plots, report  # deferred: matplotlib, only when plotting

  emb = None
  if s.family.has_retrieval and s.data.gallery is not None:
    emb = protocol.gallery_embeddings(s.evaluator, state, s.data.gallery)
  pairs = protocol.pair_predictions(s.evaluator, state, s.data.pairs, results["classification"]["threshold"])
  if jax.process_index() == 0:
    written = plots.write_training_plots(
      workdir,
      embeddings=emb,
      pair_predictions=pairs,
      results=results,
      title=f"{s.family.description} on {s.config.data.dataset}",
    )
    weight = results.get("retrieval", {}).get("emotion_weight", 0.0)
    examples = report.retrieved_examples(emb, emotion_weight=weight) if emb is not None else None
    note = f"Best checkpoint (step {results['checkpoint_step']}) of this run (its folder), at the end of training."
    report.write_report(workdir, results, plots=written, examples=examples, note=note)
