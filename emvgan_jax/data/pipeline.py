"""The grain input pipeline: a split into this process's share of each global batch.

grain `MapDataset`s shuffle and batch *indices* into a split (`splits.Split`). In host memory a batch costs one
numpy gather, and the loader is never what a training step waits for (see
`benchmarks/input_pipeline.py`); a split left on disk (`data/records.py`) reads each batch's rows from
its array_record shards, in grain's prefetch threads (`iterate(..., prefetch=True)`). Every process knows the
same global order and takes its own contiguous slice of each global batch, so it reads (or gathers) only those
rows; `make_global_batch` is the one seam where a per-process numpy batch becomes a global `jax.Array`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import grain
import jax
import numpy as np

from emvgan_jax.data.splits import ARRAY_KEYS, Split

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


def gather_batch(split: Split, indices: np.ndarray, size: int) -> dict[str, np.ndarray]:
  """Rows `indices` of `split` as a batch of `size` rows; missing rows are padding with mask False."""
  n = len(indices)
  if n < size:
    indices = np.concatenate([indices, np.zeros(size - n, indices.dtype)])
  video, music = split.features(indices)  # a split on disk reads just these rows, here
  batch = {key: getattr(split, key)[indices] for key in ARRAY_KEYS if key not in ("video", "music")}
  batch.update(video=video, music=music)
  mask = np.zeros(size, bool)
  mask[:n] = True
  batch["mask"] = mask
  return batch


def num_train_steps_per_epoch(num_examples: int, global_batch_size: int, drop_remainder: bool = True) -> int:
  full, rest = divmod(num_examples, global_batch_size)
  return full if drop_remainder or not rest else full + 1


def _batches(
  split: Split,
  order: np.ndarray,
  global_batch_size: int,
  drop_remainder: bool,
  process_index: int | None,
  process_count: int | None,
) -> grain.MapDataset:
  """A MapDataset over global batches of `order`; element b is this process's share of batch b."""
  local = _local_slice(global_batch_size, process_index, process_count)
  size = local.stop - local.start
  num = num_train_steps_per_epoch(len(order), global_batch_size, drop_remainder)
  # Indices are sliced per batch with numpy (one vectorised gather per batch): per-element grain transforms
  # cost ~50 us each in Python, which at batch 256 would be what the training step waits for.
  return grain.MapDataset.range(num).map(
    lambda b: gather_batch(split, order[b * global_batch_size : (b + 1) * global_batch_size][local], size)
  )


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


PREFETCH_THREADS = 2  # batches of a split on disk read ahead of the step, in grain's threads


def iterate(ds: grain.MapDataset, start: int = 0, *, prefetch: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Elements `start`, `start + 1`, ... of a `MapDataset`, in order.

  With `prefetch` (for a split on disk, whose batches are read from its records) grain reads the next batches
  in `PREFETCH_THREADS` threads while the caller works on this one; the elements are the same either way. In
  memory a plain loop is faster (a batch is one numpy gather).
  """
  if not prefetch:
    for i in range(start, len(ds)):
      yield ds[i]
    return
  options = grain.ReadOptions(num_threads=PREFETCH_THREADS, prefetch_buffer_size=PREFETCH_THREADS)
  yield from ds[start:].to_iter_dataset(options)


# ------------------------------------------------------------------------------------------------------------
# The seam between host and devices.
# ------------------------------------------------------------------------------------------------------------


def make_global_batch(batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Turns this process's numpy batch into global `jax.Array`s sharded as `sharding` (e.g. P('data')).

  The global batch is the concatenation, in process order, of every process's local batch.
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
