"""Loading a trained run back from its workdir: config, model family, state and standardisation.

This is what the evaluation tools stand on: everything needed to use a checkpoint is inside it (the resolved
config and the train-split statistics are saved with every checkpoint), so a workdir can be evaluated on
another machine, with another device count, long after training. It never imports the training loop.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import jax
import ml_collections
import numpy as np

from emvgan_jax import config_lib, errors, families
from emvgan_jax.data.standardize import Standardizer
from emvgan_jax.ops import non_finite_rows
from emvgan_jax.runtime import checkpoint as ckpt_lib
from emvgan_jax.runtime import sharding


class CheckpointMismatchError(ckpt_lib.CheckpointError, ValueError):
  """A checkpoint whose arrays do not fit the model its own config describes (another code version made it)."""


@dataclasses.dataclass
class Run:
  """A restored checkpoint and what it takes to use it."""

  config: ml_collections.ConfigDict
  family: families.Family
  state: Any
  standardizer: Standardizer
  step: int
  kind: str  # 'best' or 'latest'
  meta: dict[str, Any]
  mesh: jax.sharding.Mesh
  workdir: str = ""  # where it was restored from (its results.json holds the run's emotion weight)


def parse_checkpoint(spec: str) -> tuple[str, int | None]:
  """'best' | 'latest' | STEP -> (kind, step). A bare step is looked up among the `latest` and `best` ones."""
  if spec in ckpt_lib.KINDS:
    return spec, None
  try:
    return "", int(spec)
  except ValueError:
    raise errors.UsageError(f"--checkpoint must be 'best', 'latest' or a step number, got {spec!r}") from None


def load_run(workdir: str, checkpoint: str = "best", *, mesh: jax.sharding.Mesh | None = None) -> Run:
  """Restores a run from `workdir`.

  A run still training in `workdir` replaces its checkpoints as it goes: a read that fails because the checkpoint
  it reads was replaced meanwhile is tried once more on the newest one (for 'best' and 'latest'; a step number is
  read as asked).

  Args:
    workdir: a training workdir (with `checkpoints/`).
    checkpoint: 'best', 'latest' or a step number.
    mesh: where to put the state (default: every device on `data`, parameters replicated).

  Raises:
    errors.UsageError: `checkpoint` is none of 'best', 'latest' or a step number.
    checkpoint.CheckpointError: no such checkpoint, a damaged one, or one replaced twice while being read (the
      message says what to do).
    CheckpointMismatchError: the checkpoint does not fit the model its own config describes.
  """
  kind, step = parse_checkpoint(checkpoint)
  for attempt in range(2):
    checkpoints = ckpt_lib.Checkpoints(workdir, read_only=True)
    reading: dict[str, Any] = {}
    try:
      return _read(checkpoints, workdir, kind, step, mesh, reading)
    except Exception:
      read_kind, read_step = reading.get("kind"), reading.get("step")
      if step is not None or read_step is None or not checkpoints.replaced_since(read_kind, read_step):
        raise
      if attempt:
        raise ckpt_lib.CheckpointError(
          f"the '{read_kind}' checkpoint of {workdir} was replaced twice while it was being read: the run there is "
          "still training; evaluate --checkpoint=best (replaced only when the model improves), or wait until the "
          "run finishes"
        ) from None
      logging.warning(
        "The '%s' checkpoint at step %d was replaced while being read; reading the newest", *reading.values()
      )
    finally:
      checkpoints.close()
  raise AssertionError("unreachable")


def _read(
  checkpoints: ckpt_lib.Checkpoints,
  workdir: str,
  kind: str,
  step: int | None,
  mesh: jax.sharding.Mesh | None,
  reading: dict[str, Any],
) -> Run:
  """`load_run`'s one attempt; records in `reading` the kind and step it reads before reading them."""
  if not kind:  # a step: whichever manager holds it
    kind = next((k for k in ("best", "latest") if step in checkpoints.all_steps(k)), "latest")
  reading.update(kind=kind, step=step if step is not None else checkpoints.latest_step(kind))
  step, meta, stats = checkpoints.restore_meta(kind, step)
  config = config_lib.merge_onto_defaults(meta["config"])
  family = families.build(config)
  standardizer = Standardizer.from_dict(stats)
  mesh = mesh or sharding.make_mesh()
  video_dim, music_dim = standardizer.width("video"), standardizer.width("music")
  target = sharding.abstract_state(lambda rng: family.init(rng, video_dim, music_dim), mesh)
  try:
    _, state, _, _ = checkpoints.restore(kind, target, step)
  except (ValueError, KeyError, TypeError) as e:
    if checkpoints.replaced_since(kind, step):
      raise  # not a mismatch: the files changed under the read (load_run tries again)
    # Orbax's own advice (turn on truncation or padding) would silently load a different model: it is dropped.
    reason = re.sub(r"\s*Truncating/padding is disabled.*", "", " ".join(str(e).split())).rstrip(". ")
    raise CheckpointMismatchError(
      f"the '{kind}' checkpoint at step {step} in {workdir} does not fit the model its config describes "
      f"({family.description}, video width {video_dim}, music width {music_dim}): {reason[:600]}; evaluate it "
      "with the code version that trained it, or retrain into a new workdir"
    ) from e
  return Run(
    config=config,
    family=family,
    state=state,
    standardizer=standardizer,
    step=step,
    kind=kind,
    meta=meta,
    mesh=mesh,
    workdir=workdir,
  )


def check_features(run: Run, modality: str, x: np.ndarray, what: str, *, other_modality_hint: str = "") -> np.ndarray:
  """`x` as (N, width) float32 rows of `modality` that this run can read.

  `other_modality_hint` is appended to the message when `x` has the other modality's width (a tool says which
  flag swaps them).

  Raises:
    ValueError: another width (saying if it is the other modality's), or a NaN / infinite value (row named).
  """
  x = np.asarray(x, np.float32)
  x = x[None, :] if x.ndim == 1 else x
  s = run.standardizer
  width, other = s.width(modality), "music" if modality == "video" else "video"
  if x.ndim != 2 or x.shape[1] != width:
    got = x.shape[-1] if x.ndim else 0
    hint = f"; width {got} is this run's {other} width{other_modality_hint}" if got == s.width(other) else ""
    raise ValueError(
      f"{what} has {modality} features of shape {x.shape}, but this run's {modality} features are {width} wide "
      f"(pass vectors of width {width}){hint}"
    )
  rows = non_finite_rows(x)
  if len(rows):
    raise ValueError(f"{what} has NaN or infinite values in {len(rows)} row(s), first row {int(rows[0])}")
  return x
