"""Writes `dummy_data/`: a tiny fake EmoMV repository (all three datasets) for the builder's tests.

The layout, file names, CSV formats and HDF5 keys/dtypes are those of the real repository, so that the tests
exercise every quirk the builder handles:

* pair CSVs with 7 columns, matched rows first, mismatched pairs `A_PAIR_B` with their swap `B_PAIR_A`;
* EmoMV-A's 3-column retrieval CSV (`dir, filename.mp4, label_id`), including one bare file name that occurs
  in two class folders, and its float64 VGGish gallery file;
* EmoMV-B/C's 4-column retrieval CSVs; lower-case emotion names in A/B, capitalised ones in C;
* HDF5 key `default` in SlowFast files and `data` in VGGish files.

Features have the real widths (2304 / 128, fixed by the builder's features) but only a handful of rows. They
are small multiples of 0.5 stored gzip-compressed, which keeps the files small. The output is deterministic
(fixed seed, no HDF5 timestamps), so rerunning the script reproduces the files byte for byte. The CSVs are
committed; the HDF5 feature files are written on first use by `ensure_dummy_data` (git ignores *.h5).

Usage: python -m tfds_emomv.emomv.make_dummy_data [OUT_DIR]   (default: dummy_data/ beside this file)
"""

from __future__ import annotations

import csv
import pathlib
import sys

import h5py
import numpy as np

from tfds_emomv import commands
from tfds_emomv.emomv import files

# Emotion names as the real CSVs spell them: lower case in DS1/DS2, capitalised in DS3.
_SPELLING = {'a': str.lower, 'b': str.lower, 'c': str.capitalize}

# Per config and pair split: (matched segments, mismatched segment pairs), each segment as (name, emotion id).
# Every mismatched pair (A, B) becomes the rows A_PAIR_B and B_PAIR_A, as in the real files.
_PAIRS = {
  'a': {
    'TRAIN': (
      [
        ('exciting_FAKE_EXT(130)', 0),
        ('fear_FAKE_FEAR(12)', 1),
        ('sad_FAKE_SAD(7)-2-of-5', 3),
        ('relax_FAKE_RLX(107)', 4),
      ],
      [(('tense_FAKE_TENS(74)-3-of-5', 2), ('relax_FAKE_RLX(3)', 4))],
    ),
    'VAL': (
      [('exciting_FAKE_MV(14)-18-of-21', 0), ('tense_FAKE_TENS(17)-4-of-12', 2)],
      [(('sad_FAKE_SAD(2)', 3), ('fear_FAKE_FEAR(9)', 1))],
    ),
    'TEST': (
      [('exciting_FAKE_EXT(1)', 0), ('sad_FAKE_DL(82)-5-of-8', 3)],
      [(('relax_FAKE_RELX(33)-2-of-11', 4), ('tense_FAKE_TENS(56)', 2))],
    ),
  },
  'b': {
    'TRAIN': ([('fakeB000tr1', 0), ('fakeB001tr2', 3)], [(('fakeB002tr3', 4), ('fakeB003tr4', 1))]),
    'VAL': ([('fakeB100va1', 0), ('-fakeB10_va', 2)], [(('fakeB102va3', 4), ('fakeB103va4', 0))]),
  },
  'c': {
    'TRAIN': (
      [('fakeC00trn1_02', 0), ('fakeC01trn2_03', 1), ('fakeC02-rn3_01', 3), ('fakeC03trn4_05', 4)],
      [(('fakeC04trn5_02', 4), ('fakeC05trn6_07', 2))],
    ),
    'VAL': ([('fakeC1_val1_06', 0), ('fakeC11val2_04', 3)], [(('fakeC12val3_07', 4), ('fakeC13val4_06', 2))]),
  },
}

# EmoMV-A's gallery (MVED test set) lists bare file names per class folder. Besides the test segments it
# holds two more, one of which reuses the bare name of a test segment in another class folder.
_A_CLASS_FOLDERS = ('Excited', 'Fear', 'Tension', 'Sad', 'Relaxation')
_A_EXTRA_GALLERY = [('FAKE_EXT(1).mp4', 1), ('FAKE_TT(5).mp4', 2)]

_SPLIT_DIR = {'TRAIN': 'train', 'VAL': 'val', 'TEST': 'test'}
_SEED = 20230101


def _segment_features(rng: np.random.Generator, segments: list[tuple[str, int]]) -> dict[str, tuple]:
  """One (video, music) feature pair per segment: non-negative multiples of 0.5, like compressible data."""
  out = {}
  for name, _ in segments:
    video = rng.integers(0, 8, size=files.VIDEO_DIM).astype(np.float32) * 0.5
    music = rng.integers(0, 8, size=files.MUSIC_DIM).astype(np.float32) * 0.5
    out[name] = (video, music)
  return out


def _write_h5(path: pathlib.Path, key: str, array: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, 'w', track_order=False) as f:
    # No timestamps, fixed chunking: byte-identical output on every run.
    f.create_dataset(
      key,
      data=array,
      compression='gzip',
      compression_opts=9,
      shuffle=True,
      chunks=(min(len(array), 16), array.shape[1]),
      track_times=False,
    )


def _write_csv(path: pathlib.Path, rows: list[list]) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    csv.writer(f, lineterminator='\n').writerows(rows)


def _dir_prefix(config: str, split: str, matched: bool) -> str:
  if config == 'a':
    return f'Dataset1/DS1_{split}_{"MATCH" if matched else "MISMATCH"}/'
  n = {'b': 2, 'c': 3}[config]
  return f'Dataset{n}/DS{n}_{_SPLIT_DIR[split]}_{"match" if matched else "mismatch"}/'


def _write_config(root: pathlib.Path, config: str, rng: np.random.Generator) -> None:
  spell = _SPELLING[config]
  split_names = {'TRAIN': 'train', 'VAL': 'validation', 'TEST': 'test'}
  features: dict[str, tuple] = {}
  segments_of: dict[str, list[tuple[str, int]]] = {}
  for split, (matched, mismatched) in _PAIRS[config].items():
    segments = list(matched) + [seg for pair in mismatched for seg in pair]
    segments_of[split] = segments
    features.update(_segment_features(rng, segments))
    rows, video, music = [], [], []
    for name, emotion in matched:
      e = spell(files.EMOTIONS[emotion])
      rows.append([_dir_prefix(config, split, True), name, 1, e, e, emotion, emotion])
      video.append(features[name][0])
      music.append(features[name][1])
    for first, second in mismatched:
      for (v_name, v_emo), (m_name, m_emo) in ((first, second), (second, first)):
        rows.append(
          [
            _dir_prefix(config, split, False),
            f'{v_name}_PAIR_{m_name}',
            0,
            spell(files.EMOTIONS[v_emo]),
            spell(files.EMOTIONS[m_emo]),
            v_emo,
            m_emo,
          ]
        )
        video.append(features[v_name][0])
        music.append(features[m_name][1])
    paths = files.split_files(config, split_names[split])
    _write_csv(root / paths.csv, rows)
    _write_h5(root / paths.video, 'default', np.stack(video))
    _write_h5(root / paths.music, 'data', np.stack(music))

  paths = files.split_files(config, 'gallery')
  rows, video, music = [], [], []
  if config == 'a':
    # Gallery = the test segments under their bare file names, plus the extra items.
    extra = _A_EXTRA_GALLERY
    features.update(_segment_features(rng, [(f'extra{i}', label) for i, (_, label) in enumerate(extra)]))
    items = [(name.split('_', 1)[1] + '.mp4', emotion, features[name]) for name, emotion in segments_of['TEST']]
    items += [(filename, label, features[f'extra{i}']) for i, (filename, label) in enumerate(extra)]
    for filename, label, (v, m) in items:
      rows.append([f'Dataset1/for_retrieval/TEST_MVED/{_A_CLASS_FOLDERS[label]}/video', filename, label])
      video.append(v)
      music.append(m)
    music_array = np.stack(music).astype(np.float64)  # the real VGGish DS1 gallery file is float64
  else:
    n = {'b': 2, 'c': 3}[config]
    for name, emotion in segments_of['VAL']:
      rows.append([f'Dataset{n}/for_retrieval/DS{n}_val_for_retrieval/', name, spell(files.EMOTIONS[emotion]), emotion])
      video.append(features[name][0])
      music.append(features[name][1])
    music_array = np.stack(music)
  _write_csv(root / paths.csv, rows)
  _write_h5(root / paths.video, 'default', np.stack(video))
  _write_h5(root / paths.music, 'data', music_array)


def make_dummy_data(out_dir: pathlib.Path) -> None:
  """Writes the fake repository (DS1_EmoMV_A/, DS2_EmoMV_B/, DS3_EmoMV_C/) under `out_dir`.

  Args:
    out_dir: the folder to write into (created; existing dummy files are overwritten).
  """
  rng = np.random.default_rng(_SEED)
  for config in files.CONFIG_FOLDERS:
    _write_config(pathlib.Path(out_dir), config, rng)


DEFAULT_DIR = pathlib.Path(__file__).resolve().parent / 'dummy_data'


def ensure_dummy_data(out_dir: pathlib.Path = DEFAULT_DIR) -> pathlib.Path:
  """Writes the dummy repository under `out_dir` unless all of its feature files are already there.

  The CSVs are kept in git; the HDF5 feature files are binary and fully determined by this script, so they are
  written on first use (tests, `configs/tiny.py`) instead of being committed.

  Returns:
    `out_dir`.
  """
  out_dir = pathlib.Path(out_dir)
  expected = [out_dir / rel for config in files.CONFIG_FOLDERS for rel in files.config_files(config)]
  if not all(path.is_file() for path in expected):
    make_dummy_data(out_dir)
  return out_dir


def main(argv: list[str]) -> None:
  if commands.help_asked(argv):
    print(__doc__.strip())
    sys.exit(0)
  if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith('-')):
    print(f'error: expected at most one argument, OUT_DIR, got {argv[1:]} (see --help)', file=sys.stderr)
    sys.exit(2)
  out_dir = pathlib.Path(argv[1]) if len(argv) > 1 else pathlib.Path(__file__).resolve().parent / 'dummy_data'
  make_dummy_data(out_dir)
  print(f'wrote {out_dir}')


if __name__ == '__main__':
  main(sys.argv)
