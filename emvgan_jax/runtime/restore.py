"""Loading a trained run back from its workdir: config, model family, state and standardisation.

This is what the evaluation tools stand on: everything needed to use a checkpoint is inside it (the resolved
config and the train-split statistics are saved with every checkpoint), so a workdir can be evaluated on
another machine, with another device count, long after training. It never imports the training loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from emvgan_jax import config_lib, families
from emvgan_jax.data.standardize import Standardizer
from emvgan_jax.runtime import checkpoint as ckpt_lib
from emvgan_jax.runtime import sharding


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


def parse_checkpoint(spec: str) -> tuple[str, int | None]:
  """'best' | 'latest' | STEP -> (kind, step). A bare step is looked up among the `latest` and `best` ones."""
  if spec in ckpt_lib.KINDS:
    return spec, None
  try:
    return "", int(spec)
  except ValueError:
    raise ValueError(f"--checkpoint must be 'best', 'latest' or a step number, got {spec!r}") from None


def load_run(workdir: str, checkpoint: str = "best", *, mesh: jax.sharding.Mesh | None = None) -> Run:
  """Restores a run from `workdir`.

  Args:
    workdir: a training workdir (with `checkpoints/`).
    checkpoint: 'best', 'latest' or a step number.
    mesh: where to put the state (default: every device on `data`, parameters replicated).

  Raises:
    checkpoint.CheckpointNotFoundError: no such checkpoint (the message says how to make one).
    ValueError: the checkpoint does not fit the model its own config describes.
  """
  kind, step = parse_checkpoint(checkpoint)
  checkpoints = ckpt_lib.Checkpoints(workdir, read_only=True)
  try:
    if not kind:  # a step: whichever manager holds it
      kind = next((k for k in ("best", "latest") if step in checkpoints.all_steps(k)), "latest")
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
      raise ValueError(
        f"The '{kind}' checkpoint at step {step} in {workdir} does not fit the model its config describes "
        f"({family.description}, video width {video_dim}, music width {music_dim}): {e}"
      ) from e
  finally:
    checkpoints.close()
  return Run(
    config=config, family=family, state=state, standardizer=standardizer, step=step, kind=kind, meta=meta, mesh=mesh
  )
