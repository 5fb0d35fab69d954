"""Input pipeline: EmoMV splits from TFDS into sharded global batches.

Data flows one way: the TFDS builder (`tfds_emomv`) writes array_record files; `load_dataset` reads each split
once through `tfds.data_source` into host memory (EmoMV's largest split, A/train, is 4,110 x 2,432 float32 =
40 MB); grain `MapDataset`s then shuffle and batch *indices* into that cache, so a batch costs one numpy gather
and the loader is never what a training step waits for (see `emvgan_jax/benchmarks/input_pipeline.py`).

Every process holds the same cache and the same global order, and takes its own contiguous slice of each
global batch; `make_global_batch` is the one seam where a per-process numpy batch becomes a global `jax.Array`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import grain
import jax
import numpy as np

# Keys of a batch that go to the device. `name` stays on the host.
ARRAY_KEYS = ("video", "music", "match", "video_emotion", "music_emotion")
_INT_KEYS = ("match", "video_emotion", "music_emotion")


@dataclasses.dataclass(frozen=True)
class Split:
  """One EmoMV split held in host memory; row i of every array is example i of the split."""

  name: np.ndarray  # (n,) str
  video: np.ndarray  # (n, dv) float32
  music: np.ndarray  # (n, dm) float32
  match: np.ndarray  # (n,) int32, 1 = matched
  video_emotion: np.ndarray  # (n,) int32 in [0, 5)
  music_emotion: np.ndarray  # (n,) int32 in [0, 5)

  def __post_init__(self):
    n = len(self.name)
    for key in ARRAY_KEYS:
      if len(getattr(self, key)) != n:
        raise ValueError(f"Split field {key!r} has {len(getattr(self, key))} rows, expected {n} (one per name)")

  def __len__(self) -> int:
    return len(self.name)

  @property
  def video_dim(self) -> int:
    return int(self.video.shape[1])

  @property
  def music_dim(self) -> int:
    return int(self.music.shape[1])

  def take(self, rows: np.ndarray) -> Split:
    """The split restricted to `rows` (indices or a boolean mask), in that order."""
    return Split(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, Any]) -> Split:
    """Builds a split from a dict of arrays (as `tfds_emomv.emomv.files.read_pairs` returns)."""
    return cls(
        name=np.asarray([_to_str(x) for x in arrays["name"]], dtype=object),
        video=np.ascontiguousarray(arrays["video"], dtype=np.float32),
        music=np.ascontiguousarray(arrays["music"], dtype=np.float32),
        **{k: np.asarray(arrays[k], dtype=np.int32) for k in _INT_KEYS},
    )


def _to_str(x: Any) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# ------------------------------------------------------------------------------------------------------------
# Loading from TFDS.
# ------------------------------------------------------------------------------------------------------------


def prepare_dataset(dataset: str, *, data_dir: str | None, manual_dir: str | None = None):
  """Returns the TFDS builder of `dataset` (e.g. 'emomv/c'), building it into `data_dir` on first use.

  Args:
    dataset: TFDS name with config, `emomv/a`, `emomv/b` or `emomv/c`.
    data_dir: the TFDS data dir (None: TFDS's default, ~/tensorflow_datasets).
    manual_dir: a local copy of the EmoMV repository; None downloads the files from their public URLs.

  Raises:
    tfds_emomv.emomv.EmoMVFormatError: a source file is missing (named, with its URL) or malformed.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from tfds_emomv.emomv import prepare  # pylint: disable=g-import-not-at-top  (registers `emomv`)

  builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    if jax.process_index() == 0:
      logging.info("Building %s into %s (first use)", dataset, builder.data_dir)
      prepare.build_one(dataset, data_dir, manual_dir)
    if jax.process_count() > 1:  # the others wait, then read what process 0 wrote
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices(f"built {dataset}")
    builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
  return builder


def load_dataset(dataset: str, *, data_dir: str | None, manual_dir: str | None = None) -> dict[str, Split]:
  """Reads every split of `dataset` into host memory (building it first if needed)."""
  builder = prepare_dataset(dataset, data_dir=data_dir, manual_dir=manual_dir)
  sources = builder.as_data_source()
  return {split: _read_source(source) for split, source in sources.items()}


def _read_source(source) -> Split:
  n = len(source)
  records = source.__getitems__(list(range(n))) if n else []
  if not records:
    raise ValueError("empty split")
  arrays = {key: np.stack([r[key] for r in records]) for key in ARRAY_KEYS}
  arrays["name"] = [r["name"] for r in records]
  return Split.from_arrays(arrays)


# ------------------------------------------------------------------------------------------------------------
# Standardisation (fitted on train only, saved with the model).
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Per-modality, per-feature mean and standard deviation, fitted on the train split.

  Matches scikit-learn's StandardScaler (population std; a constant feature keeps std 1), which is what the
  published EmoMV code applies.
  """

  video_mean: np.ndarray
  video_std: np.ndarray
  music_mean: np.ndarray
  music_std: np.ndarray

  @classmethod
  def fit(cls, split: Split) -> Standardizer:
    def stats(x):
      x = x.astype(np.float64)
      mean, std = x.mean(axis=0), x.std(axis=0)
      std = np.where(std < 1e-12, 1.0, std)
      return mean.astype(np.float32), std.astype(np.float32)

    vm, vs = stats(split.video)
    mm, ms = stats(split.music)
    return cls(video_mean=vm, video_std=vs, music_mean=mm, music_std=ms)

  def apply(self, split: Split) -> Split:
    """Returns the split with both modalities standardised (a new object; the input is unchanged)."""
    if split.video_dim != len(self.video_mean) or split.music_dim != len(self.music_mean):
      raise ValueError(
          f"Standardisation statistics are for video width {len(self.video_mean)} and music width "
          f"{len(self.music_mean)}, but the data has widths {split.video_dim} and {split.music_dim}"
      )
    return dataclasses.replace(
        split,
        video=((split.video - self.video_mean) / self.video_std).astype(np.float32),
        music=((split.music - self.music_mean) / self.music_std).astype(np.float32),
    )

  def to_dict(self) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Standardizer:
    return cls(**{f.name: np.asarray(d[f.name], dtype=np.float32) for f in dataclasses.fields(cls)})


# ------------------------------------------------------------------------------------------------------------
# Held-out part of train, grouped by YouTube id (for tuning without looking at validation).
# ------------------------------------------------------------------------------------------------------------


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
# Iterators.
# ------------------------------------------------------------------------------------------------------------


def epoch_seed(seed: int, epoch: int) -> int:
  """The shuffle seed of one epoch: a pure function of (seed, epoch), so a resumed run replays the same order."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint32)[0])


def _local_slice(global_batch_size: int, process_index: int | None, process_count: int | None) -> slice:
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by {process_count} processes")
  local = global_batch_size // process_count
  return slice(process_index * local, (process_index + 1) * local)


def _gather(split: Split, indices: np.ndarray, size: int) -> dict[str, np.ndarray]:
  """Rows `indices` of `split` as a batch of `size` rows; missing rows are padding with mask False."""
  n = len(indices)
  if n < size:
    indices = np.concatenate([indices, np.zeros(size - n, indices.dtype)])
  batch = {key: getattr(split, key)[indices] for key in ARRAY_KEYS}
  mask = np.zeros(size, bool)
  mask[:n] = True
  batch["mask"] = mask
  return batch


def num_train_steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool = True) -> int:
  full, rest = divmod(num_examples, global_batch_size)
  return full if drop_remainder or not rest else full + 1


def _batches(split: Split, order: np.ndarray, global_batch_size: int, drop_remainder: bool,
             process_index: int | None, process_count: int | None) -> grain.MapDataset:
  """A MapDataset over global batches of `order`; element b is this process's share of batch b."""
  local = _local_slice(global_batch_size, process_index, process_count)
  size = local.stop - local.start
  num = num_train_steps_per_epoch(len(order), global_batch_size, drop_remainder)
  # Indices are sliced per batch with numpy (one vectorised gather per batch): per-element grain transforms
  # cost ~50 us each in Python, which at batch 256 would be what the training step waits for.
  return grain.MapDataset.range(num).map(
      lambda b: _gather(split, order[b * global_batch_size:(b + 1) * global_batch_size][local], size))


def train_dataset(
    split: Split,
    *,
    global_batch_size: int,
    seed: int,
    epoch: int,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
  """One epoch of this process's training batches, as a grain `MapDataset` (random access, `len()` known).

  The order is a seeded permutation that differs per epoch and depends only on (seed, epoch). Each element is a
  dict of numpy arrays of `global_batch_size // process_count` rows plus a boolean `mask`. With
  `drop_remainder=False` the last, short global batch is padded (mask False) instead of dropped, which keeps
  the batch shape static under jit.
  """
  if global_batch_size <= 0:
    raise ValueError(f"global batch size must be positive, got {global_batch_size}")
  if drop_remainder and len(split) < global_batch_size:
    raise ValueError(
        f"The train split has {len(split)} examples, fewer than one global batch of {global_batch_size}: "
        "lower the batch size or set drop_remainder=False"
    )
  order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(split))
  return _batches(split, order, global_batch_size, drop_remainder, process_index, process_count)


def eval_dataset(
    split: Split,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> grain.MapDataset:
  """This process's evaluation batches: the split in order, the last global batch padded, with a `mask`."""
  return _batches(split, np.arange(len(split)), global_batch_size, False, process_index, process_count)


def iterate(ds: grain.MapDataset) -> Iterator[dict[str, np.ndarray]]:
  """Iterates a `MapDataset` in order (a plain loop: indices are cheap, and order must be exact)."""
  for i in range(len(ds)):
    yield ds[i]


# ------------------------------------------------------------------------------------------------------------
# The seam between host and devices.
# ------------------------------------------------------------------------------------------------------------


def make_global_batch(
    batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding
) -> dict[str, jax.Array]:
  """Turns this process's numpy batch into global `jax.Array`s sharded as `sharding` (e.g. P('data')).

  The global batch is the concatenation, in process order, of every process's local batch.
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
