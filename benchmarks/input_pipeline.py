"""Input-pipeline throughput on a train split, in examples/s: from host memory, or from disk a batch at a time.

  python -m benchmarks.input_pipeline --dataset=emomv/c --data_dir=/tmp/tfds \
      --manual_dir=$EMOMV_DIR --batch_size=256
  python -m benchmarks.input_pipeline --dataset=features --data_dir=/tmp/feat \
      --manual_dir=/tmp/syn1m --batch_size=4096 --stream_above_mb=0 [--compare_tfds=/tmp/tfds_syn1m]

Measures what a training step waits for, twice: producing this process's standardised numpy batches (shuffled per
epoch; gathered from the host cache, or read from the split's array_record shards with grain's prefetch threads
when the split stays on disk), then that plus turning them into sharded global jax.Arrays (on a GPU or TPU this
copy overlaps the previous step). Each figure is --seconds of batches after a warm-up batch.

--compare_reader (with --dataset=features and a split on disk): the loader as it reads the shards (by byte offset,
`data/offsets.py`) against the same loader through array_record's reader, interleaved in --rounds rounds of
--seconds each (median ratio with min and max); the first batches of both are checked equal first.

--compare_tfds=D (with --dataset=features): the same folder built by the `emomv/c` TFDS builder into D, and random
batches of rows decoded from its TFDS records vs read as raw rows from the features shards, interleaved in
--rounds rounds (median ratio with min and max).
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import flags

import benchmarks
from emvgan_jax import errors
from emvgan_jax.tools import cli

if TYPE_CHECKING:
  from emvgan_jax.data.splits import Split

_DATASET = flags.DEFINE_string("dataset", "emomv/c", "emomv/a|b|c (TFDS), or 'features' (tfds_emomv.features).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (built there on first use).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder in EmoMV's layout (None with emomv/*: download).")
_LAYOUT = flags.DEFINE_string("layout", "", "With --dataset=features: its dataset folder (a, b, c; '': the only one).")
_STREAM = flags.DEFINE_float(
  "stream_above_mb", 256.0, "With --dataset=features: splits with more MB of features are read from disk (0: all)."
)
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 3.0, "How long to measure each figure.")
_DROP = flags.DEFINE_bool(
  "drop_remainder", True, "Full batches only (False: the short last batch is padded, and only its valid rows count)."
)
_COMPARE_TFDS = flags.DEFINE_string("compare_tfds", None, "TFDS data dir holding the same folder built as emomv/c.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Interleaved rounds of --compare_tfds or --compare_reader.", lower_bound=1)
_COMPARE_READER = flags.DEFINE_bool(
  "compare_reader", False, "Reads by byte offset against array_record's reader, interleaved (a split on disk)."
)


def _train_split():
  from emvgan_jax.data import records  # deferred: JAX loads once the flags are parsed
  from emvgan_jax.data import splits as splits_lib  # deferred: JAX loads once the flags are parsed

  if _DATASET.value == "features":
    kwargs = dict(data_dir=_DATA_DIR.value, layout=_LAYOUT.value, stream_above_mb=_STREAM.value, need=["train"])
    return records.load_features(_MANUAL_DIR.value, **kwargs)["train"]
  return splits_lib.load_dataset(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)["train"]


def _throughput(train: Split, to_device: bool, batch_sharding: Any) -> tuple[float, int]:
  """Examples/s over --seconds of batches (epochs chained), after one warm-up batch; and the batches timed."""
  import jax  # deferred: JAX loads once the flags are parsed

  from emvgan_jax.data import pipeline  # deferred: as above

  def batches():
    for epoch in itertools.count():
      ds = pipeline.train_dataset(
        train, global_batch_size=_BATCH.value, seed=0, epoch=epoch, drop_remainder=_DROP.value
      )
      yield from pipeline.iterate(ds, prefetch=train.on_disk)

  it = batches()
  next(it)
  examples, count, start = 0, 0, time.perf_counter()
  while time.perf_counter() - start < _SECONDS.value:
    batch = next(it)
    if to_device:
      jax.block_until_ready(pipeline.make_global_batch(batch, batch_sharding))
    examples += int(batch["mask"].sum())
    count += 1
  return examples / (time.perf_counter() - start), count


def _through_reader(train: Split) -> Split:
  """`train` with its rows read through array_record's reader instead of by byte offset."""
  import dataclasses  # deferred: only for this comparison

  from emvgan_jax.data import records  # deferred: JAX loads once the flags are parsed

  source = train.video.source
  plain = records.ArrayRecordSource(source.paths, source.width("video"), source.width("music"), by_offset=False)
  return dataclasses.replace(
    train,
    video=dataclasses.replace(train.video, source=plain),
    music=dataclasses.replace(train.music, source=plain),
  )


def _compare_reader(train: Split) -> None:
  """The loader reading by byte offset against array_record's reader, interleaved rounds of --seconds each."""
  from emvgan_jax.data import pipeline  # deferred: JAX loads once the flags are parsed

  if not train.video.source.by_offset:
    raise errors.Error("these shards are not in the layout read by byte offset; nothing to compare")
  sides = {"by offset": train, "array_record reader": _through_reader(train)}
  first = [pipeline.train_dataset(s, global_batch_size=_BATCH.value, seed=0, epoch=0)[0] for s in sides.values()]
  for key in first[0]:
    np.testing.assert_array_equal(first[0][key], first[1][key], err_msg=key)  # the same batch either way
  rates = {name: [] for name in sides}
  for r in range(_ROUNDS.value):
    for name in sides if r % 2 == 0 else reversed(list(sides)):
      rates[name].append(_throughput(sides[name], False, None)[0])
  ratio = np.asarray(rates["by offset"]) / np.asarray(rates["array_record reader"])
  for name, rate in rates.items():
    print(f"  {name:20s} {np.median(rate):>10,.0f} examples/s [{min(rate):,.0f}, {max(rate):,.0f}]")
  print(
    f"  by offset / array_record reader: {np.median(ratio):.2f}x [{ratio.min():.2f}, {ratio.max():.2f}] "
    f"(median of {_ROUNDS.value} interleaved rounds of {_SECONDS.value:g} s, batch {_BATCH.value})"
  )


def _compare_tfds(train: Split) -> None:
  """Random batches decoded from TFDS records vs read as raw rows, interleaved."""
  from emvgan_jax.data import splits as splits_lib  # deferred: JAX loads once the flags are parsed

  builder = splits_lib.prepare_dataset("emomv/c", data_dir=_COMPARE_TFDS.value, manual_dir=_MANUAL_DIR.value)
  tfds_source = builder.as_data_source()["train"]
  if len(tfds_source) != len(train):
    raise errors.Error(f"{_COMPARE_TFDS.value} holds {len(tfds_source)} train rows, the features {len(train)}")
  rng = np.random.default_rng(0)
  times = {"tfds": [], "raw rows": []}
  for _ in range(_ROUNDS.value):
    rows = rng.choice(len(train), _BATCH.value, replace=False)
    t0 = time.perf_counter()
    records = tfds_source.__getitems__(rows.tolist())
    tfds_video = np.stack([r["video"] for r in records])
    t1 = time.perf_counter()
    raw_video, _ = train.video.source.read(rows)
    t2 = time.perf_counter()
    np.testing.assert_array_equal(tfds_video, raw_video)  # the same rows either way
    times["tfds"].append(t1 - t0)
    times["raw rows"].append(t2 - t1)
  ratio = np.asarray(times["tfds"]) / np.asarray(times["raw rows"])
  for name, t in times.items():
    t = np.asarray(t)
    print(f"  {name:9s} {_BATCH.value / np.median(t):>10,.0f} rows/s (batch of {_BATCH.value} random rows)")
  spread = f"[{ratio.min():.1f}, {ratio.max():.1f}]"
  print(f"  raw rows are {np.median(ratio):.1f}x faster {spread} (median of {_ROUNDS.value} interleaved rounds)")


def main(argv: list[str]) -> None:
  del argv

  def body() -> None:
    import jax  # deferred: JAX loads once the flags are parsed

    from emvgan_jax.data.standardize import Standardizer  # deferred: as above
    from emvgan_jax.runtime import sharding  # deferred: as above

    print(benchmarks.machine())
    t0 = time.perf_counter()
    raw = _train_split()
    train = Standardizer.fit(raw.take(np.arange(min(len(raw), 50_000)))).apply(raw)  # statistics of a prefix
    where = "on disk" if train.on_disk else "in memory"
    print(f"loaded {_DATASET.value} train ({len(train):,} examples, {where}) in {time.perf_counter() - t0:.1f} s")
    batch_sharding = sharding.batch_sharding(sharding.make_mesh())
    for to_device, what in ((False, "numpy batches (the loader)"), (True, "+ host->device (sharded jax.Array)")):
      rate, count = _throughput(train, to_device, batch_sharding)
      print(
        f"input pipeline, {what}: {rate:,.0f} examples/s (batch {_BATCH.value}, {count} batches, {where}, "
        f"drop_remainder={_DROP.value}, {jax.device_count()} device(s))"
      )
    if _COMPARE_READER.value:
      if not train.on_disk:
        raise errors.UsageError("--compare_reader reads the features from disk: add --stream_above_mb=0")
      _compare_reader(train)
    if _COMPARE_TFDS.value:
      if not train.on_disk:
        raise errors.UsageError("--compare_tfds reads the features from disk: add --stream_above_mb=0")
      _compare_tfds(train)

  body()


if __name__ == "__main__":
  cli.run_app(main, __doc__)
