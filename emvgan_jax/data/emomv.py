"""EmoMV's protocol, in one place: which splits a run trains, selects and reports on, and how to hold out part
of train.

EmoMV (Thao, Herremans, Roig, Information Fusion 2023; docs/data.md) names a mismatched pair `A_PAIR_B` (video
of segment A, music of segment B) and a segment `<youtube_id>_<index>`. Training selects checkpoints on the
`validation` split; EmoMV-A reports classification on `test`, B and C (which have no test split) on
`validation`; retrieval is on the `gallery` split. For tuning without looking at validation,
`data.holdout_fraction > 0` holds out part of train grouped by YouTube id and rebuilds a gallery from it.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from emvgan_jax import config_lib
from emvgan_jax.data.splits import Split, load_dataset
from emvgan_jax.data.standardize import Standardizer
from tfds_emomv.emomv.files import EMOTIONS  # noqa: F401  (the class names, in id order, re-exported)

HOLDOUT_SPLIT = "train-holdout"
HOLDOUT_GALLERY = "train-holdout-gallery"
TRAIN_GALLERY = "train-gallery"  # a gallery rebuilt from the segments a run trained on


class DataError(ValueError):
  """The data asked for does not exist (a split the dataset lacks) or does not fit the model; the message says
  what to do."""


# ------------------------------------------------------------------------------------------------------------
# Held-out part of train, grouped by YouTube id (for tuning without looking at validation).


def segment_ids(name: str) -> tuple[str, ...]:
  """The segments a row uses: `A_PAIR_B` uses A (video) and B (music); a matched row uses itself."""
  return tuple(name.split("_PAIR_")) if "_PAIR_" in name else (name,)


def video_id(segment: str) -> str:
  """YouTube id of a segment named `<youtube_id>_<segment>` (ids may themselves contain '_')."""
  return segment.rsplit("_", 1)[0]


def holdout_split(split: Split, *, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `split` into (train, held-out) so that no YouTube video has rows on both sides.

  Videos linked by a mismatched pair (`A_PAIR_B`) are kept on the same side, so every mismatched pair keeps its
  swap and every segment's own video and music are on one side (what `gallery_from_pairs` needs).
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
  parent: dict[str, str] = {}

  def find(x: str) -> str:
    parent.setdefault(x, x)
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  row_groups = []
  for name in split.name:
    vids = [video_id(s) for s in segment_ids(name)]
    for v in vids[1:]:
      parent[find(v)] = find(vids[0])
    row_groups.append(vids[0])
  roots = np.asarray([find(v) for v in row_groups])
  groups = sorted(set(roots))
  rng = np.random.default_rng(seed)
  rng.shuffle(groups)
  held, count, target = set(), 0, fraction * len(split)
  for g in groups:
    if count >= target:
      break
    held.add(g)
    count += int(np.sum(roots == g))
  is_held = np.asarray([r in held for r in roots])
  return split.take(~is_held), split.take(is_held)


def gallery_from_pairs(split: Split) -> Split:
  """One row per segment of a pair split: its own video and music, labelled with its emotion.

  Matched rows are their segment's own pair; a segment used in mismatched pairs gets its video from `A_PAIR_B`
  and its music from `B_PAIR_A`. This is how EmoMV's B/C retrieval galleries relate to their val splits.
  """
  video, music, emotion = {}, {}, {}
  for i, name in enumerate(split.name):
    segs = segment_ids(name)
    v_seg, m_seg = segs[0], segs[-1]
    video.setdefault(v_seg, i)
    music.setdefault(m_seg, i)
    emotion.setdefault(v_seg, int(split.video_emotion[i]))
    emotion.setdefault(m_seg, int(split.music_emotion[i]))
  names = [s for s in dict.fromkeys(segment_ids(n)[0] for n in split.name) if s in music]
  v_rows = np.asarray([video[s] for s in names], dtype=np.int64)
  m_rows = np.asarray([music[s] for s in names], dtype=np.int64)
  labels = np.asarray([emotion[s] for s in names], dtype=np.int32)
  return Split(
    name=np.asarray(names, dtype=object),
    video=split.video[v_rows],
    music=split.music[m_rows],
    match=np.ones(len(names), np.int32),
    video_emotion=labels,
    music_emotion=labels.copy(),
  )


# ------------------------------------------------------------------------------------------------------------
# The splits of a run.


@dataclasses.dataclass
class RunData:
  """The standardised splits a run uses, and the names of the splits they came from."""

  train: Split
  pairs: Split  # selection and classification split
  gallery: Split | None
  standardizer: Standardizer
  pairs_name: str
  gallery_name: str | None


def manual_dir_from(config: ml_collections.ConfigDict) -> str | None:
  """The local EmoMV copy of a config: `data.manual_dir`, else $EMOMV_DIR, else None (download)."""
  return config.data.manual_dir or os.environ.get("EMOMV_DIR") or None


def default_split(dataset: str, holdout_fraction: float = 0.0) -> str:
  """The protocol's pair split: the held-out part of train for a held-out run, else A: test, B and C: validation."""
  if holdout_fraction > 0:
    return HOLDOUT_SPLIT
  return "test" if dataset == "emomv/a" else "validation"


def selection_split(config: ml_collections.ConfigDict) -> str:
  """The split training selects checkpoints on."""
  return HOLDOUT_SPLIT if config.data.holdout_fraction > 0 else "validation"


def _load(config: ml_collections.ConfigDict) -> dict[str, Split]:
  return load_dataset(config.data.dataset, data_dir=config.data.data_dir, manual_dir=manual_dir_from(config))


def load_run_data(config: ml_collections.ConfigDict, standardizer: Standardizer | None = None) -> RunData:
  """Loads the dataset named in the config and standardises it with train statistics.

  With `config.data.holdout_fraction > 0` the validation split and gallery are replaced by a held-out part of
  train (grouped by YouTube id) and the gallery built from it: the real validation split is never read.
  """
  splits = _load(config)
  train = splits["train"]
  if config.data.holdout_fraction > 0:
    train, held = holdout_split(train, fraction=config.data.holdout_fraction, seed=config.data.holdout_seed)
    pairs, gallery = held, gallery_from_pairs(held)
    pairs_name, gallery_name = HOLDOUT_SPLIT, HOLDOUT_GALLERY
  else:
    pairs_name = "validation"
    pairs, gallery, gallery_name = splits["validation"], splits.get("gallery"), "gallery"
  standardizer = standardizer or Standardizer.fit(train)
  apply = standardizer.apply
  return RunData(
    train=apply(train),
    pairs=apply(pairs),
    gallery=apply(gallery) if gallery is not None else None,
    standardizer=standardizer,
    pairs_name=pairs_name,
    gallery_name=gallery_name,
  )


def load_eval_data(
  run_config: ml_collections.ConfigDict,
  standardizer: Standardizer,
  *,
  dataset: str,
  split: str,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  need_train_split: bool = True,
) -> RunData:
  """The splits to evaluate a trained run on, standardised with the run's (training set's) statistics.

  Args:
    run_config: the run's resolved config.
    standardizer: the run's statistics (from its checkpoint).
    dataset: the EmoMV set to evaluate on.
    split: its pair split (`validation`, `test`, `train`, or `train-holdout` for a held-out run's own part).
    data_dir: TFDS data dir (None: the run's).
    manual_dir: EmoMV copy (None: the run's, then $EMOMV_DIR).
    need_train_split: whether `RunData.train` is needed (the threshold of cosine-scored models): it is the train
      split of the dataset the model was TRAINED on (minus the held-out part for a held-out run).

  Returns:
    A `RunData` whose `pairs` and `gallery` are the evaluation splits.

  Raises:
    DataError: the dataset has no such split, or `train-holdout` asked of a run without a held-out part.
      Also when the dataset's features have other widths than the model's.
  """
  same = dataset == run_config.data.dataset
  config = config_lib.with_data(run_config, dataset=dataset, data_dir=data_dir, manual_dir=manual_dir)
  if split == HOLDOUT_SPLIT:
    if run_config.data.holdout_fraction <= 0 or not same:
      raise DataError(
        f"--split={HOLDOUT_SPLIT} is the held-out part of the training set of a run trained with "
        f"data.holdout_fraction > 0 (this run: {run_config.data.holdout_fraction}, trained on "
        f"{run_config.data.dataset}); pick validation or test"
      )
    return load_run_data(config, standardizer)  # the very split and gallery training evaluated on
  splits = _load(config)
  if split not in splits or split == "gallery":
    pair_splits = sorted(s for s in splits if s != "gallery")
    raise DataError(f"{dataset} has no pair split {split!r}; use --split with one of {pair_splits}")
  apply = standardizer.apply
  try:
    pairs = apply(splits[split])
    gallery = apply(splits["gallery"]) if "gallery" in splits else None
  except ValueError as e:  # the other set's features have other widths than the model's
    raise DataError(f"{dataset} cannot be fed to this model: {e}") from e
  train_split = pairs  # placeholder: only cosine-scored models read RunData.train
  if need_train_split:
    if same and run_config.data.holdout_fraction <= 0:
      train_split = apply(splits["train"])
    else:  # the threshold belongs to the model: choose it where the model was trained
      own = config_lib.with_data(run_config, data_dir=data_dir, manual_dir=manual_dir)
      train_split = load_run_data(own, standardizer).train
  return RunData(
    train=train_split,
    pairs=pairs,
    gallery=gallery,
    standardizer=standardizer,
    pairs_name=split,
    gallery_name="gallery" if gallery is not None else None,
  )


def train_gallery(
  run_config: ml_collections.ConfigDict,
  standardizer: Standardizer,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> Split:
  """A gallery rebuilt (`gallery_from_pairs`) from the very rows a run trained on, standardised like them.

  Set beside the real gallery, it tells a property learnt in general (it holds on both) from one fitted to the
  training clips (it holds on this one only).
  """
  own = config_lib.with_data(run_config, data_dir=data_dir, manual_dir=manual_dir)
  return gallery_from_pairs(load_run_data(own, standardizer).train)


def load_gallery(config: ml_collections.ConfigDict) -> Split:
  """The raw (unstandardised) `gallery` split of the config's dataset.

  Raises:
    DataError: the dataset has no gallery split.
  """
  splits = _load(config)
  if "gallery" not in splits:
    raise DataError(f"{config.data.dataset} has no gallery split")
  return splits["gallery"]
