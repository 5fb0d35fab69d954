"""The SHA-256 of a file, read in blocks: checkpoints, built datasets and gallery indexes are checked with it."""

import hashlib

BLOCK = 1 << 20


def file_sha256(path: str) -> str:
  """The hex SHA-256 of the file at `path`, read `BLOCK` bytes at a time (bounded memory for any size)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(BLOCK), b""):
      digest.update(block)
  return digest.hexdigest()
