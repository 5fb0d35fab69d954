"""Input-pipeline throughput on an EmoMV train split, in examples/s.

  python -m emvgan_jax.benchmarks.input_pipeline --dataset=emomv/c --data_dir=/tmp/tfds \
      --manual_dir=../shared/emomv --batch_size=256

Measures what a training step waits for: producing this process's standardised numpy batches (shuffled per
epoch, gathered from the host cache) and, with --to_device, also turning them into sharded global jax.Arrays.
Epochs are iterated until --seconds have passed; the first epoch is warm-up and not counted.
"""

import time

from absl import app, flags

from emvgan_jax import input_pipeline

_DATASET = flags.DEFINE_string("dataset", "emomv/c", "TFDS dataset name with config.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (built there on first use).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Local copy of the EmoMV repository (None: download).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "How long to measure.")
_TO_DEVICE = flags.DEFINE_bool("to_device", True, "Also build the global jax.Array batch (the host->device seam).")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top

  from emvgan_jax import sharding  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  splits = input_pipeline.load_dataset(_DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value)
  train = input_pipeline.Standardizer.fit(splits["train"]).apply(splits["train"])
  print(f"loaded {_DATASET.value} train ({len(train)} examples) in {time.perf_counter() - t0:.2f} s")
  batch_sharding = sharding.batch_sharding(sharding.make_mesh())

  def one_epoch(epoch: int) -> int:
    ds = input_pipeline.train_dataset(train, global_batch_size=_BATCH.value, seed=0, epoch=epoch,
                                      drop_remainder=False)
    n = 0
    for batch in input_pipeline.iterate(ds):
      if _TO_DEVICE.value:
        arrays = input_pipeline.make_global_batch(batch, batch_sharding)
        jax.block_until_ready(arrays)
      n += int(batch["mask"].sum())
    return n

  one_epoch(0)
  examples, epoch, start = 0, 1, time.perf_counter()
  while time.perf_counter() - start < _SECONDS.value:
    examples += one_epoch(epoch)
    epoch += 1
  elapsed = time.perf_counter() - start
  where = "to sharded jax.Array" if _TO_DEVICE.value else "numpy batches"
  print(f"input pipeline ({where}): {examples / elapsed:,.0f} examples/s "
        f"(batch {_BATCH.value}, {epoch - 1} epochs, {jax.device_count()} device(s))")


if __name__ == "__main__":
  app.run(main)
