"""Fixed-size records of an array_record file read by their byte offsets (`os.preadv`), not through its reader.

A features shard (`tfds_emomv/features.py`) is written uncompressed with one record per chunk, and every record
of a split has the same size, so where each record's bytes lie is known once the chunks' offsets are. Those are
in the file's footer, which array_record's postscript points to (the file is a riegeli file: a 24-byte block
header at every multiple of 64 KiB, chunks of a 40-byte header and their data between them). `layout` reads
the footer once, into a `ShardLayout`; a batch is then one `preadv` per row straight into a staging block, with
no per-record objects.

Nothing is trusted blindly. The footer must describe exactly one record of the expected size per chunk, or the
file is read by array_record's reader instead (`layout` returns None: another writer's options, another record
size). Every row read is checked against the structure it must have: its chunk header (data size, chunk type,
one record, decoded size), the simple-chunk prefix (no compression, one size, the record's size), and, where the
row spans a 64 KiB boundary, the block header there (its distances back to the chunk's start and on to its end).
An offset that is wrong by even a byte fails those checks and raises `LayoutError`; the values themselves are
guarded by the SHA-256 every shard is checked against when a split is loaded.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

BLOCK = 1 << 16  # riegeli's block size: a block header starts every BLOCK bytes
BLOCK_HEADER = 24  # header hash, distance back to the chunk's start, distance on to its end (u64 each)
CHUNK_HEADER = 40  # header hash, data size, data hash, chunk type (1 byte) + records (7), decoded data size
SIMPLE_CHUNK = ord("r")  # riegeli's simple chunk with records
POSTSCRIPT_MAGIC = 0x71930E704FDAE05E  # array_record's postscript magic


class LayoutError(ValueError):
  """A row's bytes are not the chunk its offset promised: the file is not what its footer says."""


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _decode_varints(data: np.ndarray) -> np.ndarray:
  """Every varint of a byte string of concatenated varints, as uint64 (vectorised)."""
  data = np.asarray(data, np.uint8)
  if not len(data) or data[-1] & 0x80:
    raise ValueError("truncated varint")
  ends = np.flatnonzero(data < 0x80)
  starts = np.concatenate([[0], ends[:-1] + 1])
  if np.any(ends - starts >= 10):
    raise ValueError("varint too long")
  shift = (np.arange(len(data)) - np.repeat(starts, ends - starts + 1)).astype(np.uint64) * np.uint64(7)
  return np.add.reduceat((data & 0x7F).astype(np.uint64) << shift, starts)


def _logical(data: bytes, position: int) -> bytes:
  """The bytes of `data`, read from file position `position`, without the block headers inside them."""
  out, at = [], 0
  while at < len(data):
    boundary = -(position + at) % BLOCK  # bytes to the next block boundary (0: at one)
    if boundary == 0:
      at += BLOCK_HEADER
      continue
    out.append(data[at : at + boundary])
    at += boundary
  return b"".join(out)


def _simple_chunk(chunk: bytes) -> tuple[np.ndarray, bytes]:
  """(record sizes, concatenated records) of an uncompressed simple chunk (its header included)."""
  header = np.frombuffer(chunk[:CHUNK_HEADER], "<u8")
  data = chunk[CHUNK_HEADER : CHUNK_HEADER + int(header[1])]
  if len(data) != int(header[1]) or (int(header[3]) & 0xFF) != SIMPLE_CHUNK or not data or data[0] != 0:
    raise ValueError("not an uncompressed simple chunk")
  raw = np.frombuffer(data, np.uint8)
  head_end = int(np.flatnonzero(raw[1:] < 0x80)[0]) + 2  # compression byte, then the varint sizes_size
  sizes_size = int(_decode_varints(raw[1:head_end])[0])
  sizes = _decode_varints(raw[head_end : head_end + sizes_size])
  values = data[head_end + sizes_size :]
  if len(sizes) != int(header[3]) >> 8 or int(sizes.sum()) != len(values):
    raise ValueError("record sizes disagree with the chunk")
  return sizes, values


@dataclasses.dataclass(frozen=True)
class ShardLayout:
  """Where each record of one array_record file lies: `offsets[i]` is the file position of record i's chunk."""

  path: str
  record_bytes: int
  offsets: np.ndarray  # (records,) int64

  @property
  def prefix(self) -> bytes:
    """The simple chunk's bytes before a record: no compression, the size of its sizes, its size."""
    size = _varint(self.record_bytes)
    return b"\x00" + _varint(len(size)) + size

  @property
  def chunk_bytes(self) -> int:
    """A record's chunk without block headers: its header, the prefix, the record."""
    return CHUNK_HEADER + len(self.prefix) + self.record_bytes


def layout(path: str, record_bytes: int) -> ShardLayout | None:
  """The layout of an array_record file whose every chunk holds one uncompressed record of `record_bytes`, read
  from its footer; None if the file is anything else (it is then read by array_record's reader)."""
  try:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
      postscript_at = (size - 1) // BLOCK * BLOCK
      f.seek(postscript_at)
      _, values = _simple_chunk(_logical(f.read(BLOCK), postscript_at))
      fields = _decode_varints(np.frombuffer(values, np.uint8))  # [8, footer offset, 16, magic] x copies
      if len(fields) < 4 or fields[0] != 8 or fields[2] != 16 or int(fields[3]) != POSTSCRIPT_MAGIC:
        return None
      footer_at = int(fields[1])
      f.seek(footer_at)
      sizes, values = _simple_chunk(_logical(f.read(postscript_at - footer_at), footer_at))
    # The footer's records after its metadata: (8, chunk offset, 16, decoded size, 24, records) each.
    records = np.frombuffer(values[int(sizes[0]) :], np.uint8)
    fields = _decode_varints(records).reshape(-1, 6) if len(records) else np.zeros((0, 6), np.uint64)
  except (OSError, ValueError, IndexError):
    return None
  found = ShardLayout(path=path, record_bytes=record_bytes, offsets=fields[:, 1].astype(np.int64))
  if len(fields) != len(sizes) - 1 or found.chunk_bytes + BLOCK_HEADER > BLOCK:
    return None  # (a chunk longer than a block could hold two block headers)
  expected = np.array([8, 0, 16, record_bytes, 24, 1], np.uint64)
  if np.any(fields[:, [0, 2, 3, 4, 5]] != expected[[0, 2, 3, 4, 5]]):
    return None
  return found


class OffsetReader:
  """Records of several files (in order: a split's shards), read by offset into a caller's staging block."""

  def __init__(self, layouts: list[ShardLayout]):
    if not layouts or len({(x.record_bytes, x.chunk_bytes) for x in layouts}) != 1:
      raise ValueError("an OffsetReader reads files of one record size")
    self.record_bytes = layouts[0].record_bytes
    self.chunk_bytes = layouts[0].chunk_bytes
    self._prefix = np.frombuffer(layouts[0].prefix, np.uint8)
    self._paths = [x.path for x in layouts]
    self._offsets = np.concatenate([x.offsets for x in layouts])
    self._file = np.concatenate([np.full(len(x.offsets), i, np.int32) for i, x in enumerate(layouts)])
    self._open()

  def __len__(self) -> int:
    return len(self._offsets)

  def __getstate__(self) -> dict:
    """A copy or a pickled reader (another process) opens the files again: descriptor numbers mean nothing there,
    and this reader closes its own when it goes."""
    return {k: v for k, v in self.__dict__.items() if k != "_fds"}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._open()

  def _open(self) -> None:
    """The files opened once, read by any thread (pread keeps no file position); appended one by one, so that
    `__del__` closes those opened before a failure."""
    self._fds: list[int] = []
    for path in self._paths:
      self._fds.append(os.open(path, os.O_RDONLY))

  def __del__(self) -> None:
    for fd in getattr(self, "_fds", ()):
      try:
        os.close(fd)
      except OSError:
        pass

  def staging(self, rows: int) -> np.ndarray:
    """A staging block for `rows` records (each row a chunk with room for one block header)."""
    return np.empty((rows, self.chunk_bytes + BLOCK_HEADER), np.uint8)

  def read_into(self, rows: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """The records `rows` (global indices) as a (len(rows), record_bytes) uint8 view into `stage`, each checked
    against its chunk's structure (`LayoutError` if one is not what its offset promised)."""
    n, length = len(rows), self.chunk_bytes
    begin = self._offsets[rows]
    boundary = (begin + BLOCK - 1) // BLOCK * BLOCK  # the first block boundary at or after each chunk's start
    crossing = boundary < begin + length  # a block header lies inside the chunk's bytes
    span = length + BLOCK_HEADER * crossing
    fds, files = self._fds, self._file[rows]
    for i in range(n):
      got = os.preadv(fds[files[i]], [stage[i, : span[i]]], int(begin[i]))
      if got != span[i]:
        raise LayoutError(f"{self._paths[files[i]]}: record {int(rows[i])} is cut short ({got} of {span[i]} bytes)")
    block_headers = np.zeros((n, 3), np.uint64)
    for i in np.flatnonzero(crossing):  # lift each block header out, closing the gap it leaves
      cut = int(boundary[i] - begin[i])
      block_headers[i] = stage[i, cut : cut + BLOCK_HEADER].view("<u8")
      stage[i, cut:length] = stage[i, cut + BLOCK_HEADER : length + BLOCK_HEADER]
    self._check(rows, stage[:n], begin, boundary, crossing, block_headers)
    start = CHUNK_HEADER + len(self._prefix)
    return stage[:n, start : start + self.record_bytes]

  def _check(
    self,
    rows: np.ndarray,
    stage: np.ndarray,
    begin: np.ndarray,
    boundary: np.ndarray,
    crossing: np.ndarray,
    block_headers: np.ndarray,
  ) -> None:
    header = np.ascontiguousarray(stage[:, :CHUNK_HEADER]).view("<u8")
    prefix = stage[:, CHUNK_HEADER : CHUNK_HEADER + len(self._prefix)]
    ok = (header[:, 1] == len(self._prefix) + self.record_bytes) & (header[:, 3] == SIMPLE_CHUNK | 1 << 8)
    ok &= (header[:, 4] == self.record_bytes) & np.all(prefix == self._prefix, axis=1)
    end = begin + self.chunk_bytes + BLOCK_HEADER  # where a crossing chunk ends
    ok &= ~crossing | (
      (block_headers[:, 1] == (boundary - begin).astype(np.uint64))
      & (block_headers[:, 2] == (end - boundary).astype(np.uint64))
    )
    if not ok.all():
      bad = int(np.flatnonzero(~ok)[0])
      raise LayoutError(
        f"{self._paths[self._file[rows[bad]]]}: the bytes at offset {int(begin[bad])} are not record "
        f"{int(rows[bad])}'s chunk; the file does not match its footer (rebuild the features folder)"
      )
