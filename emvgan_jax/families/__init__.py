"""What each `config.model` is: one table, `MODELS`, read by everything that must tell models apart.

A model is either a family the training loop trains (`train.py`: its init, optimisers, train and predict steps,
a `Family` built from the config), or a peer that `evaluation/peers.py` fits in one go (scikit-learn: no steps,
no checkpoints). `train.run` dispatches on `Model.build`, `runtime/workdir.py` reads `Model.config_keys` to tell
whether two configs are the same run, and nothing else branches on the name.

A new model is a module in `models/`, a family file here with a `build(config) -> Family`, one entry in
`MODELS`, and a config section in `config_lib.py` (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import ml_collections

from emvgan_jax import config_lib
from emvgan_jax.families import baseline, emvgan
from emvgan_jax.families.base import Family, TrainState


@dataclasses.dataclass(frozen=True)
class Model:
  """One `config.model`.

  Attributes:
    build: config -> the `Family` the training loop trains; None for a peer (fitted by `evaluation/peers.py`).
    config_keys: the dotted config prefixes that, with the data, the seed and (for a trained model) the training
      loop's fields, define a run of it: two configs that agree on them are the same run.
  """

  build: Callable[[ml_collections.ConfigDict], Family] | None
  config_keys: tuple[str, ...]

  @property
  def trained(self) -> bool:
    """Whether the training loop trains it (else it is fitted in one go, without steps or checkpoints)."""
    return self.build is not None


MODELS: dict[str, Model] = {
  "emvgan": Model(build=emvgan.build, config_keys=emvgan.CONFIG_KEYS),
  "baseline": Model(build=baseline.build, config_keys=baseline.CONFIG_KEYS),
  "peer": Model(build=None, config_keys=("peer",)),
}


def model(config: ml_collections.ConfigDict) -> Model:
  """The entry of `config.model`.

  Raises:
    config_lib.ConfigError: `config.model` names no model.
  """
  if config.model not in MODELS:
    raise config_lib.ConfigError(f"config.model must be one of {sorted(MODELS)}, got {config.model!r}")
  return MODELS[config.model]


def build(config: ml_collections.ConfigDict) -> Family:
  """The family of `config.model`, built from the config.

  Raises:
    config_lib.ConfigError: `config.model` names no model, or a peer (which has no family: it is fitted).
  """
  entry = model(config)
  if entry.build is None:
    raise config_lib.ConfigError(f"config.model={config.model!r} is fitted, not trained: it has no family")
  return entry.build(config)


__all__ = ["MODELS", "Family", "Model", "TrainState", "build", "model"]
