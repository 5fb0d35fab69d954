"""The Python API in a dozen lines: which music of EmoMV-C's gallery fits its first video?

  python examples/api_quickstart.py runs/emomv_c [path/to/EmoMV]

The first argument is a trained workdir (the README's quickstart makes `runs/emomv_c`); the second a copy of
the EmoMV repository (default: $EMOMV_DIR), whose EmoMV-C retrieval gallery supplies raw feature rows as your
own extracted features would be: SlowFast for video, VGGish for music.
"""

import os
import sys

import numpy as np

import emvgan_jax
from tfds_emomv.emomv import files


def main(workdir: str, emomv_dir: str) -> None:
  run = emvgan_jax.load_run(workdir)  # the best checkpoint, with its standardisation
  gallery = files.read_split(emomv_dir, "c", "gallery", video_dim=None, music_dim=None)
  video, music, names = gallery["video"], gallery["music"], gallery["name"]
  emotions = [files.EMOTIONS[int(e)] for e in gallery["video_emotion"]]

  scores, indices = run.search(video[:1], music, k=5)  # raw rows in; standardised and embedded inside
  print(f"{run.description}: music for the video of {names[0]} ({emotions[0]})")
  for rank, (s, i) in enumerate(zip(scores[0], indices[0]), start=1):
    print(f"  {rank}. {names[i]:<24} cosine {s:+.3f}  {emotions[i]}")

  z_video, z_music = run.embed_video(video), run.embed_music(music)
  print(
    f"embeddings: video {z_video.shape}, music {z_music.shape}; own-pair cosine of item 0: "
    f"{float(z_video[0] @ z_music[0]):+.3f}"
  )
  if run.run.family.score_is_probability:
    p = run.match_probability(video[:3], music[[0, 1, 2]])
    print("match probability of the first three items' own pairs:", np.round(p, 3).tolist())


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit("usage: python examples/api_quickstart.py WORKDIR [EMOMV_DIR]")
  emomv = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("EMOMV_DIR", "")
  if not emomv:
    sys.exit("error: pass the EmoMV copy as the second argument or set EMOMV_DIR")
  main(sys.argv[1], emomv)
