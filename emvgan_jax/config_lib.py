"""The base config every experiment config starts from (`configs/*.py` change a few fields), and the one loader
of config files and parser of `a.b=value` overrides that every tool uses.

Every field is documented here once. Configs are `ml_collections.ConfigDict`s loaded with `lock_config=True`, so
`--config.train.batchsize=...` (a misspelt field) is an error, not a silently ignored flag.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import os
from collections.abc import Mapping
from typing import Any

import ml_collections

from emvgan_jax import errors


def base_config() -> ml_collections.ConfigDict:
  """EMVGAN on EmoMV-C with this project's defaults.

  EMVGAN's defaults were chosen without looking at validation: on held-out parts of the train split (20%,
  grouped by YouTube id, `data.holdout_fraction`), against the EmoMV baselines trained on the same holdouts;
  `emvgan-tune` reproduces the search and docs/models.md reports what was tried.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  # A key of `families.FAMILIES`: 'emvgan', or 'baseline' (the EmoMV benchmark models; `baseline.*` picks one);
  # or 'peer', a scikit-learn peer fitted by emvgan_jax/evaluation/peers.py (`peer.*`).
  c.model = "emvgan"
  c.data = _data()
  c.baseline = _baseline()
  c.emvgan = _emvgan()
  c.peer = _peer()
  c.loss = _loss()
  c.optim = _optim()
  c.train = _train()
  c.sharding = _sharding()
  return c


def _data() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.dataset = "emomv/c"  # emomv/a, emomv/b, emomv/c, or 'features' (any folder in EmoMV's layout: manual_dir)
  # dataset='features': which dataset folder of manual_dir ('a', 'b', 'c'; '': the only one there), and the
  # size above which a split's features stay on disk and are read a batch at a time (0: every split).
  d.layout = ""
  d.stream_above_mb = 256.0
  # > 0: a retrieval gallery of more items is cut to a seeded sample of this many (its metrics are O(items^2);
  # results.json then gives the gallery's full size beside the sample's). 0: every item.
  d.max_gallery_items = 0
  d.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data dir (None: TFDS default)
  # A local copy of the EmoMV repository (None: $EMOMV_DIR if set, else download from the public URLs).
  d.manual_dir = ml_collections.FieldReference(None, field_type=str)
  # > 0: hold out this share of train (grouped by YouTube id) and use it in place of validation and gallery.
  # This is how defaults are tuned without looking at validation.
  d.holdout_fraction = 0.0
  d.holdout_seed = 0
  # > 0: hold out this share of the training rows (grouped by YouTube id, seeded by `selection_seed`) to select
  # checkpoints on, so that the reported split is never the selection split (0: select on the reported split).
  d.selection_fraction = 0.2  # EMVGAN's default; the EmoMV baselines keep the published 0 (select on validation)
  d.selection_seed = 0
  # > 0: cross-validation. Train and validation are pooled and cut into `cv_folds` folds grouped by YouTube id
  # (seeded by `cv_repeat`); the run reports on fold `cv_fold` and trains on the others (needs selection_fraction).
  d.cv_folds = 0
  d.cv_fold = 0
  d.cv_repeat = 0
  return d


def _baseline() -> ml_collections.ConfigDict:
  b = ml_collections.ConfigDict()
  b.task = "retrieval"  # 'retrieval' or 'classification'
  b.multitask = False
  b.hidden = 64
  b.cbp_dim = 32
  b.dropout_rate = 0.5
  # Mimic the published code's RNG quirk (its CBP layer re-seeds the global generator on every call, so every
  # dropout mask and every epoch's shuffling order repeat). Off by default: the reproduction does not copy it;
  # on, it shows how much of a gap to the published numbers it explains.
  b.published_rng_quirk = False
  return b


def _peer() -> ml_collections.ConfigDict:
  p = ml_collections.ConfigDict()
  p.kind = "logreg"  # with model='peer': 'logreg', 'knn' or 'cca' (emvgan_jax/evaluation/peers.py)
  p.selection_holdouts = 3  # grouped holdouts of train its hyper-parameter is chosen on
  p.selection_fraction = 0.2
  return p


def _emvgan() -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  e.hidden = 256  # encoder width h
  e.embed_dim = 64  # common-space width d
  e.dropout_rate = 0.7  # encoder dropout
  e.disc_hidden = 256  # discriminator width h_d (0: a linear discriminator)
  # The two generators share their layers after the projection (alignment by construction, as ACMR shares its top).
  e.shared_top = False
  # Each modality's embeddings centred on their own running mean (momentum `centre_momentum`, bias-corrected)
  # before they are normalised, in training and after it: the modality gap removed by construction.
  e.centre = False
  e.centre_momentum = 0.99
  # The matmuls' dtype: 'float32', or 'bfloat16' (mixed precision: parameters, optimiser state, embeddings and
  # losses stay float32; the encoders, generators and discriminator compute in bfloat16).
  e.compute_dtype = "float32"
  return e


def _loss() -> ml_collections.ConfigDict:
  lc = ml_collections.ConfigDict()
  lc.margin = 1.0  # EmoMV contrastive margin
  lc.w_pair = 1.0  # EMVGAN: weight of the margin pair loss
  lc.w_nce = 2.0  # InfoNCE over the global batch
  lc.w_emo = 1.0  # shared emotion head's cross-entropy (mean of the two modalities)
  lc.w_adv = 0.1  # adversarial term (0: the no-adversarial ablation)
  lc.w_match = 1.0  # match calibration's binary cross-entropy
  lc.w_gap = 0.0  # moment matching: the squared distance of the batch's video and music centroids (0: off)
  # Valence-arousal regression from the common space: a shared head fits each clip's emotion's coordinates on
  # Russell's circumplex (data/emomv.py, VALENCE_AROUSAL), squared error (0: off, and the head is not built).
  lc.w_va = 1.0
  lc.adv_mode = "flip"  # 'flip' (label flipping), 'confusion' (0.5 target) or 'reversal' (minus D's loss)
  # What the discriminator sees besides the embedding: 'none' (marginal alignment), 'emotion' (the one-hot label:
  # each emotion's music aligned with its video) or 'prediction' (the emotion head's probabilities).
  lc.adv_condition = "none"
  # The embeddings the discriminator and the adversarial term see: 'train' (this step's, with encoder dropout)
  # or 'clean' (a second forward pass without dropout: the embeddings retrieval uses).
  lc.adv_inputs = "train"
  lc.adv_warmup_steps = 0  # linear warm-up of w_adv
  lc.temperature = 0.3  # InfoNCE temperature T (its initial value when learned)
  lc.learn_temperature = False
  lc.emotion_positives = True  # InfoNCE positives: same-emotion items too, not only the true pair
  # The contrastive term: 'softmax' (InfoNCE) or 'sigmoid' (SigLIP's pairwise sigmoid loss at scale 1 / T with a
  # learned bias, initialised at `sigmoid_bias_init`; the same positives). w_nce weighs either.
  lc.contrastive = "softmax"
  lc.sigmoid_bias_init = -2.0
  # How InfoNCE is computed: 'blockwise' (emvgan_jax/contrastive.py: no B x B array, no logits between devices)
  # or 'dense' (losses.info_nce_loss, the reference; the same value to float rounding).
  lc.nce_impl = "blockwise"
  lc.nce_block_rows = 512  # 'blockwise': rows of the logits each device holds at a time
  lc.r1_weight = 0.0  # R1 gradient penalty on the discriminator
  return lc


def _optim() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  # Baselines: Adam with coupled L2 (EmoMV's). EMVGAN: AdamW for generator and discriminator.
  o.learning_rate = 5e-4
  o.weight_decay = 20.0  # AdamW: decoupled, scaled by the learning rate
  o.disc_learning_rate = 1e-3
  o.disc_weight_decay = 1e-4
  # EMVGAN: which parameters AdamW's decay shrinks: 'kernels' (Dense kernels only) or 'all' (before it was fixed).
  o.decay_mask = "all"
  o.n_disc = 1  # discriminator updates per generator update
  o.b1 = 0.9
  o.b2 = 0.999
  return o


def _train() -> ml_collections.ConfigDict:
  t = ml_collections.ConfigDict()
  t.batch_size = 256  # global batch, split over the `data` mesh axis
  t.drop_remainder = False  # False: the last short batch is padded and masked (every row every epoch)
  # EMVGAN: the generators' gradient in this many microbatches (rows m, m + k, ... of every device's shard):
  # the loss, InfoNCE included, still sees the whole global batch; memory is that of one microbatch.
  t.accumulation_steps = 1
  t.num_epochs = 1000
  t.max_steps = -1  # > 0 stops after this many steps
  t.eval_every_steps = 0  # 0: evaluate at the end of every epoch
  t.patience = 20  # evaluations without improvement before early stopping (0: never stop early)
  # Metric keys: `pairs/*` on the selection split (validation, or the train holdout), `gallery/*` on its gallery.
  # EMVGAN selects on the label mAP (both directions) of the gallery rebuilt from a selection holdout of train
  # (`data.selection_fraction`): on nested train holdouts it beat selecting on the loss (docs/models.md, 3.5).
  t.selection_metric = "gallery/map"
  t.selection_mode = "max"
  t.checkpoint_every_epochs = 50
  # Also save when this many seconds have passed since the last save (0: by epochs only), bounding lost work.
  t.checkpoint_every_seconds = 300
  t.log_every_steps = 20
  t.eval_batch_size = 1024
  t.progress_bar = True
  t.plots = True  # PNGs in W/plots at the end (training curves, PR curves, PCA map, confusion matrix)
  return t


def _sharding() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.mesh_shape = ml_collections.ConfigDict({"data": -1, "model": 1})
  s.param_rule = "replicate"  # 'replicate', 'fsdp' or 'tensor' (see emvgan_jax/runtime/sharding.py)
  s.min_shard_size = 2**14
  return s


class ConfigError(errors.UsageError, ValueError):
  """A config file, override or field that cannot be used; the message names it and says what to do."""


# (field, test, what it must be): checked by `validate` before any data is read or file written.
_RANGES = (
  ("train.batch_size", lambda v: v >= 1, "a positive integer"),
  ("train.eval_batch_size", lambda v: v >= 1, "a positive integer"),
  ("train.accumulation_steps", lambda v: v >= 1, "a positive integer"),
  ("train.num_epochs", lambda v: v >= 0, "0 or more"),
  ("train.max_steps", lambda v: v == -1 or v >= 0, "-1 (no limit) or 0 or more"),
  ("train.eval_every_steps", lambda v: v >= 0, "0 (every epoch) or more"),
  ("train.patience", lambda v: v >= 0, "0 (never stop early) or more"),
  ("train.checkpoint_every_epochs", lambda v: v >= 1, "a positive integer"),
  ("train.checkpoint_every_seconds", lambda v: v >= 0, "0 (by epochs only) or more"),
  ("train.log_every_steps", lambda v: v >= 1, "a positive integer"),
  ("optim.learning_rate", lambda v: v > 0, "positive"),
  ("optim.disc_learning_rate", lambda v: v > 0, "positive"),
  ("optim.weight_decay", lambda v: v >= 0, "0 or more"),
  ("optim.disc_weight_decay", lambda v: v >= 0, "0 or more"),
  ("optim.n_disc", lambda v: v >= 1, "a positive integer"),
  ("optim.b1", lambda v: 0 <= v < 1, "in [0, 1)"),
  ("optim.b2", lambda v: 0 <= v < 1, "in [0, 1)"),
  ("emvgan.hidden", lambda v: v >= 1, "a positive integer"),
  ("emvgan.embed_dim", lambda v: v >= 1, "a positive integer"),
  ("emvgan.disc_hidden", lambda v: v >= 0, "0 (linear) or more"),
  ("emvgan.dropout_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
  ("baseline.hidden", lambda v: v >= 1, "a positive integer"),
  ("loss.temperature", lambda v: v > 0, "positive"),
  ("loss.margin", lambda v: v >= 0, "0 or more"),
  *(
    (f"loss.{w}", lambda v: v >= 0, "0 or more")
    for w in ("w_pair", "w_nce", "w_emo", "w_adv", "w_match", "w_gap", "w_va")
  ),
  ("loss.adv_warmup_steps", lambda v: v >= 0, "0 or more"),
  ("loss.r1_weight", lambda v: v >= 0, "0 or more"),
  ("loss.nce_block_rows", lambda v: v >= 1, "a positive integer"),
  ("data.holdout_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
  ("data.selection_fraction", lambda v: 0 <= v < 1, "in [0, 1)"),
  ("emvgan.centre_momentum", lambda v: 0 <= v < 1, "in [0, 1) (at 1 the running means would never move)"),
  ("data.cv_folds", lambda v: v == 0 or v >= 2, "0 (off) or 2 or more"),
  ("data.stream_above_mb", lambda v: v >= 0, "0 (every split on disk) or more"),
  ("data.max_gallery_items", lambda v: v >= 0, "0 (every item) or more"),
)
DATASETS = ("emomv/a", "emomv/b", "emomv/c", "features")


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node: Any = config
  for part in dotted.split("."):
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every numeric field's range and the names a run depends on, before anything is read or written.

  Raises:
    ConfigError: the first field that cannot be used, with what it must be.
  """
  for key, ok, what in _RANGES:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
      raise ConfigError(f"config.{key}={value!r} must be {what}")
  if config.data.dataset not in DATASETS:
    raise ConfigError(f"config.data.dataset={config.data.dataset!r} is not one of {list(DATASETS)}")
  if config.data.layout not in ("", "a", "b", "c"):
    raise ConfigError(f"config.data.layout={config.data.layout!r} must be '', 'a', 'b' or 'c'")
  if config.train.selection_mode not in ("min", "max"):
    raise ConfigError(f"config.train.selection_mode={config.train.selection_mode!r} must be 'min' or 'max'")


# The repository this package was installed from in editable mode (`pip install -e .`): its `configs/` folder is
# where a config path is looked up when it does not exist from the working directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_config_path(path: str) -> str:
  """`path` with `~` expanded, as given if it exists; else the same path inside the repository this package runs
  from (so `configs/emomv_c.py` works from any folder of an editable install); else `path` unchanged."""
  path = os.path.expanduser(path)
  if os.path.exists(path) or os.path.isabs(path):
    return path
  in_repo = os.path.join(REPO_ROOT, path)
  return in_repo if os.path.exists(in_repo) else path


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` as `--config=` does: the module's `get_config(arg)`, locked.

  Args:
    spec: a config file path (`resolve_config_path`), optionally followed by `:arg` passed to its
      `get_config(arg)`.

  Raises:
    ConfigError: the file does not exist, or its `get_config` rejects the argument.
  """
  given, _, arg = spec.partition(":")
  path = resolve_config_path(given)
  if not os.path.isfile(path):
    raise ConfigError(
      f"config file {given!r} (from {spec!r}) does not exist: looked up from {os.getcwd()}, then in the repository, "
      f"{REPO_ROOT}; give the path of a config file, e.g. configs/emomv_c.py"
    )
  module_spec = importlib.util.spec_from_file_location(f"_emvgan_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ValueError as e:
    raise ConfigError(f"{spec!r}: {e}") from e
  config.lock()
  return config


def _parse_value(text: str, current: Any) -> Any:
  """A flag string as the type of the field it replaces (bools as true/false, None fields as Python literals)."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"{text!r} is not a boolean")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets the dotted field `key` (e.g. `train.max_steps`) in place.

  A string value is parsed as the type of the field it replaces (`'100'` -> 100 for an int field); an int given
  for a float field becomes a float.

  Raises:
    ConfigError: the config has no such field, or the value does not fit it.
  """
  *parents, leaf = key.strip().split(".")
  node = config
  try:
    for p in parents:
      node = node[p]
    current = node[leaf]
  except (KeyError, AttributeError, TypeError):
    raise ConfigError(f"the config has no field {key!r}") from None
  try:
    if isinstance(value, str):
      value = _parse_value(value, current)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    node[leaf] = value
  except (ValueError, TypeError) as e:
    raise ConfigError(f"{key}={value!r}: {e}") from e


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Applies one `a.b.c=value` override in place (see `set_field`).

  Raises:
    ConfigError: not of the form key=value, an unknown field, or a value that does not fit.
  """
  key, sep, text = override.partition("=")
  if not sep:
    raise ConfigError(f"override {override!r} must be key=value, e.g. train.max_steps=100")
  try:
    set_field(config, key, text)
  except ConfigError as e:
    raise ConfigError(f"override {override!r}: {e}") from None


def with_data(
  config: ml_collections.ConfigDict,
  *,
  dataset: str | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> ml_collections.ConfigDict:
  """A copy of `config` pointing at `dataset` and the given data locations (None keeps the config's)."""
  config = copy.deepcopy(config)
  with config.unlocked():
    if dataset:
      config.data.dataset = dataset
    if data_dir:
      config.data.data_dir = data_dir
    if manual_dir:
      config.data.manual_dir = manual_dir
  return config


# Metric keys renamed since: a stored config that selects on an old name selects on its new name.
_RENAMED_METRICS = {"validation/": "pairs/"}
# Fields added since whose default differs from what older runs did: a stored config without the field gets the
# value that reproduces the old behaviour (and the optimiser-state layout its checkpoints were saved with).
_LEGACY_VALUES = {
  ("optim", "decay_mask"): "all",
  ("loss", "w_va"): 0.0,  # the valence-arousal head did not exist: its checkpoints have no such parameters
  ("data", "selection_fraction"): 0.0,  # selection was on the reported split
}


def merge_onto_defaults(stored: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A stored (JSON) config laid over today's defaults, so runs saved before a field existed still load."""
  config = base_config()

  def merge(node: ml_collections.ConfigDict, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
      if isinstance(value, dict) and key in node and isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value)
      else:
        with node.ignore_type():
          node[key] = value

  merge(config, stored)
  for (section, field), value in _LEGACY_VALUES.items():
    if field not in stored.get(section, {}):
      config[section][field] = value
  for old, new in _RENAMED_METRICS.items():
    if config.train.selection_metric.startswith(old):
      config.train.selection_metric = new + config.train.selection_metric[len(old) :]
  return config
