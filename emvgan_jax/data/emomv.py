"""EmoMV's protocol, in one place: which splits a run trains, selects and reports on, and how to hold out part
of train.

EmoMV (Thao, Herremans, Roig, Information Fusion 2023; docs/data.md) names a mismatched pair `A_PAIR_B` (video
of segment A, music of segment B) and a segment `<youtube_id>_<index>`. Training selects checkpoints on the
`validation` split; EmoMV-A reports classification on `test`, B and C (which have no test split) on
`validation`; retrieval is on the `gallery` split. For tuning without looking at validation,
`data.holdout_fraction > 0` holds out part of train grouped by YouTube id and rebuilds a gallery from it.

Two more protocols keep selecting and reporting apart (docs/models.md, section 4.7):
- `data.selection_fraction > 0` holds out part of the training rows (grouped the same way) for checkpoint
  selection, so the reported split is never the one a checkpoint was chosen on;
- `data.cv_folds = k > 0` pools train and validation and reports on fold `data.cv_fold` of a grouped k-fold
  partition (seeded by `data.cv_repeat`), training on the other folds with a selection holdout inside them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import ml_collections
import numpy as np

from emvgan_jax import config_lib
from emvgan_jax.data import records
from emvgan_jax.data.splits import DataError, Split, load_dataset, take_rows
from emvgan_jax.data.standardize import Standardizer
from tfds_emomv.emomv.files import EMOTIONS  # noqa: F401  (the class names, in id order, re-exported)

FEATURES = "features"  # the dataset of any folder in EmoMV's layout (tfds_emomv/features.py)
HOLDOUT_SPLIT = "train-holdout"
HOLDOUT_GALLERY = "train-holdout-gallery"
TRAIN_GALLERY = "train-gallery"  # a gallery rebuilt from the segments a run trained on
SELECTION_SPLIT = "train-selection"  # held out of the training rows for checkpoint selection
SELECTION_GALLERY = "train-selection-gallery"
CV_SPLIT = "cv-fold"  # the held-out fold of a cross-validation run (train + validation pooled)
CV_GALLERY = "cv-fold-gallery"


# ------------------------------------------------------------------------------------------------------------
# Held-out part of train, grouped by YouTube id (for tuning without looking at validation).


def segment_ids(name: str) -> tuple[str, ...]:
  """The segments a row uses: `A_PAIR_B` uses A (video) and B (music); a matched row uses itself."""
  return tuple(name.split("_PAIR_")) if "_PAIR_" in name else (name,)


def video_id(segment: str) -> str:
  """YouTube id of a segment named `<youtube_id>_<segment>` (ids may themselves contain '_')."""
  return segment.rsplit("_", 1)[0]


def row_groups(split: Split) -> np.ndarray:
  """(n,) group of each row: rows of one YouTube video, or of videos linked by a mismatched pair, share a group.

  Keeping a group on one side of a split keeps every mismatched pair with its swap and every segment's own
  video and music together (what `gallery_from_pairs` needs), and no YouTube video on both sides.
  """
  parent: dict[str, str] = {}

  def find(x: str) -> str:
    parent.setdefault(x, x)
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  first = []
  for name in split.name:
    vids = [video_id(s) for s in segment_ids(name)]
    for v in vids[1:]:
      parent[find(v)] = find(vids[0])
    first.append(vids[0])
  return np.asarray([find(v) for v in first])


def holdout_split(split: Split, *, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `split` into (train, held-out) so that no group of `row_groups` has rows on both sides."""
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
  roots = row_groups(split)
  groups = sorted(set(roots))
  rng = np.random.default_rng(seed)
  rng.shuffle(groups)
  sizes = dict(zip(*np.unique(roots, return_counts=True)))  # rows per group, counted once (not per group)
  held, count, target = set(), 0, fraction * len(split)
  for g in groups:
    if count >= target:
      break
    held.add(g)
    count += int(sizes[g])
  is_held = np.asarray([r in held for r in roots])
  return split.take(~is_held), split.take(is_held)


def grouped_folds(split: Split, *, folds: int, seed: int) -> np.ndarray:
  """(n,) fold index in [0, folds) of each row; no group of `row_groups` is split between two folds.

  Groups are shuffled by `seed`, then dealt largest first to the fold with the fewest rows so far (ties to the
  lowest fold), so fold sizes differ by at most the largest group.
  """
  if folds < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
  roots = row_groups(split)
  groups, sizes = np.unique(roots, return_counts=True)
  if len(groups) < folds:
    raise ValueError(f"{len(groups)} groups of videos cannot fill {folds} folds")
  order = np.random.default_rng(seed).permutation(len(groups))
  order = order[np.argsort(-sizes[order], kind="stable")]
  load, fold_of = np.zeros(folds, np.int64), {}
  for g in order:
    f = int(np.argmin(load))
    fold_of[groups[g]] = f
    load[f] += sizes[g]
  return np.asarray([fold_of[r] for r in roots], dtype=np.int64)


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
    video=take_rows(split.video, v_rows),
    music=take_rows(split.music, m_rows),
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
  pairs: Split  # the reported classification split
  gallery: Split | None  # the reported retrieval gallery
  standardizer: Standardizer
  pairs_name: str
  gallery_name: str | None
  # The split (and gallery) checkpoints are selected on: the reported ones unless `data.selection_fraction > 0`.
  selection: Split | None = None
  selection_gallery: Split | None = None
  selection_name: str | None = None
  gallery_population: int | None = None  # the full gallery's size when `gallery` is a sample of it

  def __post_init__(self):
    if self.selection is None:
      self.selection, self.selection_gallery, self.selection_name = self.pairs, self.gallery, self.pairs_name

  @property
  def selects_apart(self) -> bool:
    """Whether checkpoints are selected on rows the run does not report on."""
    return self.selection is not self.pairs


def manual_dir_from(config: ml_collections.ConfigDict) -> str | None:
  """The local EmoMV copy of a config: `data.manual_dir`, else $EMOMV_DIR, else None (download)."""
  return config.data.manual_dir or os.environ.get("EMOMV_DIR") or None


def as_recorded(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` as a run's `config.json` records it: `data.manual_dir` is the absolute folder the data came from
  (from the flag or from $EMOMV_DIR), None only where the data is downloaded."""
  manual_dir = manual_dir_from(config)
  if not manual_dir:
    return config
  return config_lib.with_data(config, manual_dir=os.path.abspath(os.path.expandvars(os.path.expanduser(manual_dir))))


def default_split(dataset: str, holdout_fraction: float = 0.0, cv_folds: int = 0) -> str:
  """The protocol's pair split: the held-out fold of a cross-validation run, the held-out part of train for a
  held-out run, else A: test, B and C: validation."""
  if cv_folds > 0:
    return CV_SPLIT
  if holdout_fraction > 0:
    return HOLDOUT_SPLIT
  return "test" if dataset == "emomv/a" else "validation"


def run_split(config: ml_collections.ConfigDict, dataset: str | None = None) -> str:
  """The pair split a run of `config` reports on `dataset` (None: its own) by default."""
  if dataset not in (None, config.data.dataset):
    return default_split(dataset)
  return default_split(config.data.dataset, config.data.holdout_fraction, config.data.cv_folds)


def selection_split(config: ml_collections.ConfigDict) -> str:
  """The split training selects checkpoints on."""
  if config.data.selection_fraction > 0:
    return SELECTION_SPLIT
  return run_split(config) if config.data.cv_folds > 0 or config.data.holdout_fraction > 0 else "validation"


def check_protocol(config: ml_collections.ConfigDict) -> None:
  """Refuses data protocol fields that do not go together (one line saying what to change).

  Raises:
    DataError: a fraction outside [0, 1), a fold outside the folds, or cross-validation combined with a held-out
      part of train or without a selection holdout.
  """
  d = config.data
  for key in ("holdout_fraction", "selection_fraction"):
    if not 0.0 <= d[key] < 1.0:
      raise DataError(f"config.data.{key}={d[key]} must be in [0, 1) (0: off)")
  if d.cv_folds == 0:
    return
  if d.cv_folds < 2 or not 0 <= d.cv_fold < d.cv_folds:
    raise DataError(
      f"config.data.cv_folds={d.cv_folds}, cv_fold={d.cv_fold}: need cv_folds >= 2 and 0 <= cv_fold < cv_folds"
    )
  if d.holdout_fraction > 0:
    raise DataError("config.data.cv_folds > 0 pools train and validation: set data.holdout_fraction=0")
  if d.selection_fraction <= 0:
    raise DataError(
      "config.data.cv_folds > 0 needs a selection holdout inside the training folds: set data.selection_fraction "
      "(e.g. 0.2)"
    )


def _load(config: ml_collections.ConfigDict, need: Sequence[str] | None = None) -> dict[str, Split]:
  """The dataset's splits; with `need`, a first build from an incomplete EmoMV copy may skip the others."""
  if config.data.dataset == FEATURES:
    return records.load_features(
      manual_dir_from(config),
      data_dir=config.data.data_dir,
      layout=config.data.layout,
      stream_above_mb=config.data.stream_above_mb,
      need=need,
    )
  return load_dataset(
    config.data.dataset,
    data_dir=config.data.data_dir,
    manual_dir=manual_dir_from(config),
    partial=need is not None,
    need=need,
  )


def load_run_data(config: ml_collections.ConfigDict, standardizer: Standardizer | None = None) -> RunData:
  """Loads the dataset named in the config and standardises it with train statistics.

  With `config.data.holdout_fraction > 0` the validation split and gallery are replaced by a held-out part of
  train (grouped by YouTube id) and the gallery built from it: the real validation split is never read.
  """
  check_protocol(config)
  d = config.data
  splits = _load(config)
  train = splits.pop("train")  # every split below is this function's own: standardised in place at the end
  if d.cv_folds > 0:
    if "validation" not in splits:
      raise DataError(f"{d.dataset} has no validation split to pool with train for cross-validation")
    if train.on_disk or splits["validation"].on_disk:
      raise DataError(
        "config.data.cv_folds > 0 pools train and validation in memory, and these splits stay on disk: raise "
        f"config.data.stream_above_mb (now {d.stream_above_mb}) or use data.selection_fraction without cv_folds"
      )
    pool = Split.concat([train, splits.pop("validation")])
    fold = grouped_folds(pool, folds=d.cv_folds, seed=d.cv_repeat)
    train, held = pool.take(fold != d.cv_fold), pool.take(fold == d.cv_fold)
    del pool
    pairs, gallery = held, gallery_from_pairs(held)
    pairs_name, gallery_name = CV_SPLIT, CV_GALLERY
  elif d.holdout_fraction > 0:
    train, held = holdout_split(train, fraction=d.holdout_fraction, seed=d.holdout_seed)
    pairs, gallery = held, gallery_from_pairs(held)
    pairs_name, gallery_name = HOLDOUT_SPLIT, HOLDOUT_GALLERY
  else:
    pairs_name = "validation"
    pairs, gallery, gallery_name = splits["validation"], splits.get("gallery"), "gallery"
  selection = selection_gallery = None
  if d.selection_fraction > 0:
    train, selection = holdout_split(train, fraction=d.selection_fraction, seed=d.selection_seed)
    selection_gallery = gallery_from_pairs(selection)  # from the raw rows, before they are standardised
  del splits  # the raw splits not used above: gone before the features are standardised
  gallery, population = sample_gallery(gallery, d.max_gallery_items)
  selection_gallery, _ = sample_gallery(selection_gallery, d.max_gallery_items)
  standardizer = standardizer or Standardizer.fit(train)
  # In place: these splits share no arrays (holdouts and galleries are copies), and nothing else holds them.
  apply = functools.partial(standardizer.apply, in_place=True)
  return RunData(
    train=apply(train),
    pairs=apply(pairs),
    gallery=apply(gallery) if gallery is not None else None,
    standardizer=standardizer,
    pairs_name=pairs_name,
    gallery_name=gallery_name,
    selection=None if selection is None else apply(selection),
    selection_gallery=None if selection is None else apply(selection_gallery),
    selection_name=None if selection is None else SELECTION_SPLIT,
    gallery_population=population,
  )


def sample_gallery(gallery: Split | None, max_items: int) -> tuple[Split | None, int | None]:
  """(gallery, None), or with `max_items` > 0 and a larger gallery (a seeded sample of `max_items` items in
  gallery order, the full gallery's size)."""
  if gallery is None or not max_items or len(gallery) <= max_items:
    return gallery, None
  keep = np.sort(np.random.default_rng(0).choice(len(gallery), max_items, replace=False))
  return gallery.take(keep), len(gallery)


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
  config = config_lib.with_data(run_config, dataset=dataset, data_dir=data_dir, manual_dir=manual_dir)
  same = same_data(run_config, config)
  if split in (HOLDOUT_SPLIT, CV_SPLIT):
    if not same or split != run_split(run_config):
      raise DataError(
        f"--split={split} is the held-out part of the run's own data: of a run trained with "
        f"data.holdout_fraction > 0 ({HOLDOUT_SPLIT}) or data.cv_folds > 0 ({CV_SPLIT}); this run reports on "
        f"{run_split(run_config)} of {run_config.data.dataset}: pick that, validation or test"
      )
    return load_run_data(config, standardizer)  # the very split and gallery training evaluated on
  # Another set is only read for the split evaluated (and its gallery, where built): a local copy that lacks
  # that set's other files (EmoMV-A's train features, say) still serves.
  splits = _load(config, need=None if same else [split])
  if split not in splits or split == "gallery":
    pair_splits = sorted(s for s in splits if s != "gallery")
    raise DataError(f"{dataset} has no pair split {split!r}; use --split with one of {pair_splits}")
  apply = standardizer.apply
  try:
    pairs = apply(splits[split])
    gallery, population = sample_gallery(splits.get("gallery"), run_config.data.max_gallery_items)  # as training
    gallery = apply(gallery) if gallery is not None else None
  except ValueError as e:  # the other set's features have other widths than the model's
    raise DataError(f"{dataset} cannot be fed to this model: {e}") from e
  train_split = pairs  # placeholder: only cosine-scored models read RunData.train
  if need_train_split:
    if same and run_split(run_config) in ("validation", "test") and run_config.data.selection_fraction <= 0:
      train_split = apply(splits["train"])
    else:  # the threshold belongs to the model: choose it where the model was trained
      train_split = load_run_data(own_data(run_config, data_dir, manual_dir), standardizer).train
  return RunData(
    train=train_split,
    pairs=pairs,
    gallery=gallery,
    standardizer=standardizer,
    pairs_name=split,
    gallery_name="gallery" if gallery is not None else None,
    gallery_population=population,
  )


def same_data(run_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> bool:
  """Whether `config` reads the data the run was trained on: the same EmoMV set (wherever its copy is), or for
  `features` the same folder and layout."""
  if config.data.dataset != run_config.data.dataset:
    return False
  if config.data.dataset != FEATURES:
    return True
  folders = [os.path.realpath(os.path.expanduser(manual_dir_from(c) or "")) for c in (run_config, config)]
  return folders[0] == folders[1] and run_config.data.layout == config.data.layout


def own_data(
  run_config: ml_collections.ConfigDict, data_dir: str | None, manual_dir: str | None
) -> ml_collections.ConfigDict:
  """The run's config, to read its own training data: an EmoMV set from the copy at `manual_dir` (if given);
  a `features` run from its own folder (another folder is another dataset)."""
  if run_config.data.dataset == FEATURES:
    manual_dir = None
  return config_lib.with_data(run_config, data_dir=data_dir, manual_dir=manual_dir)


def train_gallery(
  run_config: ml_collections.ConfigDict,
  standardizer: Standardizer,
  *,
  data_dir: str | None = None,
  manual_dir: str | None = None,
) -> tuple[Split, int | None]:
  """A gallery rebuilt (`gallery_from_pairs`) from the very rows a run trained on, standardised like them, cut
  as the run's galleries are (`data.max_gallery_items`); and its full size when it is a sample.

  Set beside the real gallery, it tells a property learnt in general (it holds on both) from one fitted to the
  training clips (it holds on this one only).
  """
  own = own_data(run_config, data_dir, manual_dir)
  return sample_gallery(gallery_from_pairs(load_run_data(own, standardizer).train), own.data.max_gallery_items)


def load_gallery(config: ml_collections.ConfigDict) -> Split:
  """The raw (unstandardised) `gallery` split of the config's dataset.

  Raises:
    DataError: the dataset has no gallery split.
  """
  splits = _load(config, need=["gallery"]) if config.data.dataset == FEATURES else _load(config)
  if "gallery" not in splits:
    raise DataError(f"{config.data.dataset} has no gallery split")
  gallery = splits["gallery"]
  if gallery.on_disk:  # the tools embed a whole gallery: read it once (into new arrays)
    video, music = gallery.features(slice(None))
    gallery = dataclasses.replace(gallery, video=video, music=music)
  return gallery
