"""Records read by their byte offsets: the same bytes as array_record's reader, for every record size and place in
the file (chunks across 64 KiB block boundaries, a chunk starting on one), over several files; files of any other
layout left to array_record's reader; and a row whose bytes are not its chunk refused, never returned."""

import numpy as np
import pytest
from array_record.python import array_record_module

from emvgan_jax.data import offsets


def _write(path, records, options="uncompressed,group_size:1"):
  writer = array_record_module.ArrayRecordWriter(str(path), options)
  for record in records:
    writer.write(record)
  writer.close()
  return str(path)


def _records(rng, count, size):
  return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(count)]


@pytest.mark.parametrize("size", [4, 100, 9728, 65400])
def test_every_record_equals_array_record_s_reader(tmp_path, size):
  rng = np.random.default_rng(size)
  count = max(3, min(3000, (1 << 21) // size))  # files of several 64 KiB blocks
  want = _records(rng, count, size)
  layout = offsets.layout(_write(tmp_path / "a", want), size)
  assert layout is not None and len(layout.offsets) == count
  reader = offsets.OffsetReader([layout])
  rows = np.concatenate([np.arange(count), rng.integers(0, count, 50)])  # every record, then repeats
  got = reader.read_into(rows, reader.staging(len(rows)))
  assert [got[i].tobytes() for i in range(len(rows))] == [want[r] for r in rows]
  starts = layout.offsets % offsets.BLOCK
  crossing = starts + layout.chunk_bytes > offsets.BLOCK
  if size >= 100:  # the test covers chunks across a block boundary (and, for the largest, from its start)
    assert crossing.any()


def test_several_files_are_one_row_space(tmp_path):
  rng = np.random.default_rng(0)
  parts = [_records(rng, n, 256) for n in (700, 1, 300)]
  layouts = [offsets.layout(_write(tmp_path / f"s{i}", p), 256) for i, p in enumerate(parts)]
  reader = offsets.OffsetReader(layouts)
  want = [r for p in parts for r in p]
  rows = rng.permutation(len(want))
  got = reader.read_into(rows, reader.staging(len(rows)))
  assert len(reader) == len(want)
  assert all(got[i].tobytes() == want[r] for i, r in enumerate(rows))


@pytest.mark.parametrize(
  "options, size, read_as",
  [
    ("group_size:1", 100, 100),  # compressed
    ("uncompressed,group_size:2", 100, 100),  # two records a chunk
    ("uncompressed,group_size:1", 100, 96),  # another record size than expected
  ],
)
def test_any_other_layout_is_left_to_array_record(tmp_path, options, size, read_as):
  path = _write(tmp_path / "f", [b"x" * size] * 5, options)
  assert offsets.layout(path, read_as) is None


def test_a_copied_or_pickled_reader_reads_through_its_own_files(tmp_path):
  import copy  # pylint: disable=g-import-not-at-top
  import pickle  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(3)
  want = _records(rng, 30, 512)
  reader = offsets.OffsetReader([offsets.layout(_write(tmp_path / "a", want), 512)])
  copies = [copy.copy(reader), pickle.loads(pickle.dumps(reader))]
  del reader  # the original closes its descriptors; a copy must not be reading through them
  for other in copies:
    got = other.read_into(np.arange(30), other.staging(30))
    assert [got[i].tobytes() for i in range(30)] == want


def test_a_file_of_no_records_has_an_empty_layout(tmp_path):
  layout = offsets.layout(_write(tmp_path / "empty", []), 100)
  assert layout is not None and len(layout.offsets) == 0
  assert len(offsets.OffsetReader([layout])) == 0


def test_records_of_several_sizes_or_a_file_that_is_not_array_record_are_left_to_array_record(tmp_path):
  assert offsets.layout(_write(tmp_path / "mixed", [b"x" * 100, b"y" * 104]), 100) is None
  (tmp_path / "junk").write_bytes(bytes(range(256)) * 1000)
  assert offsets.layout(str(tmp_path / "junk"), 100) is None
  assert offsets.layout(str(tmp_path / "missing"), 100) is None
  (tmp_path / "zero").write_bytes(b"")
  assert offsets.layout(str(tmp_path / "zero"), 100) is None


def test_a_row_whose_bytes_are_not_its_chunk_is_refused(tmp_path):
  rng = np.random.default_rng(1)
  layout = offsets.layout(_write(tmp_path / "a", _records(rng, 40, 9728)), 9728)
  for shift in (1, -4, offsets.BLOCK_HEADER):
    moved = offsets.ShardLayout(
      layout.path, layout.record_bytes, layout.offsets + np.where(np.arange(40) == 7, shift, 0)
    )
    reader = offsets.OffsetReader([moved])
    reader.read_into(np.arange(7), reader.staging(7))  # rows before the moved one read
    with pytest.raises(offsets.LayoutError, match="record 7's chunk"):
      reader.read_into(np.array([3, 7]), reader.staging(2))
  path = tmp_path / "a"
  raw = bytearray(path.read_bytes())
  crossing = next(i for i, o in enumerate(layout.offsets) if o % offsets.BLOCK + layout.chunk_bytes > offsets.BLOCK)
  boundary = (int(layout.offsets[crossing]) // offsets.BLOCK + 1) * offsets.BLOCK
  raw[boundary + 8] ^= 1  # the block header's distance back to the chunk's start
  path.write_bytes(bytes(raw))
  reader = offsets.OffsetReader([layout])
  with pytest.raises(offsets.LayoutError, match=f"record {crossing}'s chunk"):
    reader.read_into(np.array([crossing]), reader.staging(1))


def test_a_file_cut_short_is_refused(tmp_path):
  rng = np.random.default_rng(2)
  layout = offsets.layout(_write(tmp_path / "a", _records(rng, 20, 1000)), 1000)
  reader = offsets.OffsetReader([layout])
  with open(tmp_path / "a", "r+b") as f:
    f.truncate(int(layout.offsets[10]) + 100)
  with pytest.raises(offsets.LayoutError, match="record 12 is cut short"):
    reader.read_into(np.array([0, 12]), reader.staging(2))
