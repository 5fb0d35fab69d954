"""Tests of `emvgan-retrieve` (and evaluation/retrieval.py): the order of a direct numpy cosine ranking, for gallery-
name, .npy and HDF5 queries, on the TFDS gallery and on a user's own CSV + HDF5 gallery, with chunked search; one-
line errors."""

import csv
import json
import pathlib
import re

import h5py
import jax
import numpy as np
import pytest
import scipy.special
from helpers import run_main

from emvgan_jax.evaluation import retrieval
from emvgan_jax.runtime import restore
from emvgan_jax.tools import index, retrieve

N_ITEMS = 23  # prime: chunks of 5 leave a short last chunk
EMOTIONS = ("Exciting", "Fear", "Tense", "Sad", "Relax")


# Every test here searches with a trained run.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tiny_run):
  return str(tiny_run.workdir)


@pytest.fixture(scope="module")
def run(workdir):
  return restore.load_run(workdir)


@pytest.fixture(scope="module")
def own_gallery(tmp_path_factory):
  """A user's gallery in the EmoMV-B/C retrieval layout: 4-column CSV, SlowFast-like and VGGish-like HDF5."""
  d = tmp_path_factory.mktemp("own_gallery")
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 5, N_ITEMS)
  names = [f"clip{i:03d}_seg" for i in range(N_ITEMS)]
  with open(d / "gallery.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([["mine/", n, EMOTIONS[y], int(y)] for n, y in zip(names, labels)])
  video = (rng.random((N_ITEMS, 2304)) * 4).astype(np.float32)
  music = (rng.random((N_ITEMS, 128)) * 2).astype(np.float32)
  with h5py.File(d / "video.h5", "w") as f:
    f.create_dataset("default", data=video)
  with h5py.File(d / "music.h5", "w") as f:
    f.create_dataset("data", data=music)
  flags = [
    f"--gallery_csv={d / 'gallery.csv'}",
    f"--gallery_video_h5={d / 'video.h5'}",
    f"--gallery_music_h5={d / 'music.h5'}",
  ]
  return {"dir": d, "names": names, "labels": labels, "video": video, "music": music, "flags": flags}


def run_weight(run):
  """The emotion weight the run chose, read straight from its results.json."""
  return json.loads((pathlib.Path(run.workdir) / "results.json").read_text())["retrieval"]["emotion_weight"]


def reference_ranking(run, query_raw, query_mod, gallery_raw, gallery_mod, weight=None):
  """Row order by a direct float64 numpy score of the model's embeddings (stable for ties): (1 - w) cosine + w
  emotion agreement, at the run's own weight unless `weight` is given."""
  weight = run_weight(run) if weight is None else weight
  s = run.standardizer
  stats = {"video": (s.video_mean, s.video_std), "music": (s.music_mean, s.music_std)}
  embed = {"video": jax.jit(run.family.embed_video), "music": jax.jit(run.family.embed_music)}
  q = np.asarray(embed[query_mod](run.state, (query_raw - stats[query_mod][0]) / stats[query_mod][1]), np.float64)
  g = np.asarray(
    embed[gallery_mod](run.state, (gallery_raw - stats[gallery_mod][0]) / stats[gallery_mod][1]), np.float64
  )
  cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
  head = run.state.params["generator"]["emotion_head"]  # p(e | z) = softmax(z W + b), by hand
  p_q, p_g = (
    scipy.special.softmax(x.astype(np.float32) @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), axis=1)
    for x in (q, g)
  )
  sim = (1 - weight) * cos + weight * (p_q.astype(np.float64) @ p_g.astype(np.float64).T)
  return np.argsort(-sim, axis=1, kind="stable"), sim


def parse_table(text):
  """(rank, name, cosine, emotion) rows of the printed tables."""
  return [
    (int(m[1]), m[2], float(m[3]), m[4])
    for m in re.finditer(r"^\s*(\d+)\s+(\S+)\s+(-?\d\.\d{4})\s+(\w+)$", text, flags=re.M)
  ]


@pytest.mark.parametrize(("direction", "weight"), [("video_to_music", None), ("music_to_video", 0.5)])
def test_query_by_name_on_own_gallery_in_chunks(run, workdir, own_gallery, direction, weight, capsys):
  q_mod, g_mod = direction.split("_to_")
  query = 11
  code = run_main(
    retrieve,
    [
      f"--workdir={workdir}",
      f"--direction={direction}",
      f"--query={own_gallery['names'][query]}",
      "--k=7",
      "--chunk_size=5",
    ]
    + ([] if weight is None else [f"--emotion_weight={weight}"])
    + own_gallery["flags"],
  )
  assert code is None
  rows = parse_table(capsys.readouterr().out)
  query_raw = own_gallery[q_mod][query : query + 1]
  order, sim = reference_ranking(run, query_raw, q_mod, own_gallery[g_mod], g_mod, weight)
  assert [r[0] for r in rows] == list(range(1, 8))
  assert [r[1] for r in rows] == [own_gallery["names"][i] for i in order[0, :7]]
  np.testing.assert_allclose([r[2] for r in rows], sim[0, order[0, :7]], atol=1e-4)
  assert [r[3] for r in rows] == [EMOTIONS[own_gallery["labels"][i]].lower() for i in order[0, :7]]


def test_query_file_and_h5_row_equal_the_library_and_numpy(run, workdir, own_gallery, tmp_path, capsys):
  rng = np.random.default_rng(3)
  queries = (rng.random((2, 2304)) * 4).astype(np.float32)
  np.save(tmp_path / "q.npy", queries)
  code = run_main(
    retrieve,
    [
      f"--workdir={workdir}",
      "--direction=video_to_music",
      f"--query_file={tmp_path / 'q.npy'}",
      "--k=30",
      "--chunk_size=4",
    ]
    + own_gallery["flags"],
  )
  assert code is None
  rows = parse_table(capsys.readouterr().out)
  order, _ = reference_ranking(run, queries, "video", own_gallery["music"], "music")
  assert len(rows) == 2 * N_ITEMS  # k=30 is clipped to the gallery
  names = np.asarray(own_gallery["names"])
  assert [r[1] for r in rows[:N_ITEMS]] == names[order[0]].tolist()
  assert [r[1] for r in rows[N_ITEMS:]] == names[order[1]].tolist()
  # Row 5 of the music HDF5 as the query = the gallery item's own music used by name.
  code = run_main(
    retrieve,
    [
      f"--workdir={workdir}",
      "--direction=music_to_video",
      f"--query_h5={own_gallery['dir'] / 'music.h5'}",
      "--query_row=5",
      "--k=5",
    ]
    + own_gallery["flags"],
  )
  by_row = parse_table(capsys.readouterr().out)
  run_main(
    retrieve,
    [f"--workdir={workdir}", "--direction=music_to_video", f"--query={own_gallery['names'][5]}", "--k=5"]
    + own_gallery["flags"],
  )
  assert by_row == parse_table(capsys.readouterr().out)


def test_default_gallery_is_the_runs_tfds_gallery(run, workdir, capsys):
  gallery = retrieval.load_gallery(run)
  assert gallery.source == "emomv/c gallery" and len(gallery) == 4
  hits, labels = retrieval.retrieve(run, gallery, "video_to_music", query=gallery.name[2], k=10, chunk_size=3)
  order, sim = reference_ranking(run, gallery.video[2:3], "video", gallery.music, "music")
  assert [h.index for h in hits[0]] == order[0].tolist()
  assert labels[0].startswith(f"video of {gallery.name[2]}")
  code = run_main(retrieve, [f"--workdir={workdir}", "--direction=video_to_music", f"--query={gallery.name[2]}"])
  assert code is None
  assert [r[1] for r in parse_table(capsys.readouterr().out)] == gallery.name[order[0]].tolist()


# --- errors ----------------------------------------------------------------------------------------------------


def test_unknown_name_suggests_close_names(workdir, own_gallery):
  code = run_main(
    retrieve, [f"--workdir={workdir}", "--direction=video_to_music", "--query=clip011_sag"] + own_gallery["flags"]
  )
  assert code.startswith("error: no item named 'clip011_sag'") and "did you mean 'clip011_seg'" in code
  assert "\n" not in code


def test_query_file_of_the_wrong_width(workdir, own_gallery, tmp_path):
  np.save(tmp_path / "music.npy", np.ones(128, np.float32))
  code = run_main(
    retrieve,
    [f"--workdir={workdir}", "--direction=video_to_music", f"--query_file={tmp_path / 'music.npy'}"]
    + own_gallery["flags"],
  )
  assert code.startswith("error: ") and "2304 wide" in code and "other --direction" in code and "\n" not in code


def test_other_one_line_errors(workdir, own_gallery, tmp_path):
  assert "exactly one query" in run_main(retrieve, [f"--workdir={workdir}", "--direction=video_to_music"])
  assert "all three" in run_main(
    retrieve, [f"--workdir={workdir}", "--direction=video_to_music", "--query=a", own_gallery["flags"][0]]
  )
  assert "--query_row must be" in run_main(
    retrieve,
    [
      f"--workdir={workdir}",
      "--direction=video_to_music",
      f"--query_h5={own_gallery['dir'] / 'video.h5'}",
      "--query_row=99",
    ]
    + own_gallery["flags"],
  )
  assert "No 'best' checkpoint" in run_main(
    retrieve, [f"--workdir={tmp_path}", "--direction=video_to_music", "--query=a"]
  )
  assert run_main(retrieve, [f"--workdir={workdir}", "--direction=sideways", "--query=a"]).startswith("error: ")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_query_is_refused_naming_the_row(workdir, own_gallery, tmp_path, bad):
  query = np.ones((3, 2304), np.float32)
  query[1, 7] = bad
  np.save(tmp_path / "video.npy", query)
  code = run_main(
    retrieve,
    [f"--workdir={workdir}", "--direction=video_to_music", f"--query_file={tmp_path / 'video.npy'}"]
    + own_gallery["flags"],
  )
  assert code.startswith("error: the query has NaN or infinite values in 1 row(s), first row 1") and "\n" not in code


def test_an_index_written_once_gives_the_same_hits_and_refuses_what_does_not_fit(
  run, workdir, own_gallery, tmp_path, capsys
):
  out = tmp_path / "index_music"
  assert run_main(index, [f"--workdir={workdir}", "--modality=music", f"--out={out}"] + own_gallery["flags"]) is None
  assert f"Wrote {out}: {N_ITEMS} music embeddings" in capsys.readouterr().out
  assert sorted(p.name for p in out.iterdir()) == ["embeddings.npy", "emotions.npy", "index.json", "names.npy"]
  rng = np.random.default_rng(4)
  np.save(tmp_path / "q.npy", (rng.random((3, 2304)) * 4).astype(np.float32))
  query = [f"--workdir={workdir}", "--direction=video_to_music", f"--query_file={tmp_path / 'q.npy'}", "--k=7"]
  run_main(retrieve, query + own_gallery["flags"])
  direct = parse_table(capsys.readouterr().out)
  assert run_main(retrieve, query + [f"--index={out}"]) is None
  assert parse_table(capsys.readouterr().out) == direct and len(direct) == 21
  assert run_main(retrieve, query + [f"--index={out}", "--scores=bfloat16"]) is None  # the exact re-rank
  assert parse_table(capsys.readouterr().out) == direct
  # One index serves every emotion weight: at another weight than the run's it ranks as the gallery searched
  # directly at that weight.
  other = f"--emotion_weight={0 if run_weight(run) > 0 else 1}"
  run_main(retrieve, query + [other] + own_gallery["flags"])
  reweighted = parse_table(capsys.readouterr().out)
  assert run_main(retrieve, query + [f"--index={out}", other]) is None
  assert parse_table(capsys.readouterr().out) == reweighted != direct

  def error(args):
    code = run_main(retrieve, args)  # the printed line for a one-line error (cli.Exit keeps it)
    capsys.readouterr()
    return (1 if code.startswith("error: ") else code), code

  # The other modality; a query by name (an index holds no features); damaged vectors; another model.
  code, line = error([*query[:1], "--direction=music_to_video", query[2], f"--index={out}"])
  assert code == 1 and "holds music embeddings, but this direction searches video" in line
  code, line = error([*query[:2], f"--query={own_gallery['names'][0]}", f"--index={out}"])
  assert code == 1 and "--query=NAME needs the gallery's video features" in line
  meta = (out / "index.json").read_text()
  (out / "index.json").write_text(meta.replace('"params_sha256": "', '"params_sha256": "0'))
  code, line = error(query + [f"--index={out}"])
  assert code == 1 and "its vectors would rank wrongly; rebuild it" in line
  (out / "index.json").write_text(meta)
  vectors = np.load(out / "embeddings.npy")
  np.save(out / "embeddings.npy", vectors[::-1])
  code, line = error(query + [f"--index={out}"])
  assert code == 1 and "embeddings.npy is missing or damaged" in line
  np.save(out / "embeddings.npy", vectors)
  names = np.load(out / "names.npy")
  np.save(out / "names.npy", names[::-1])  # names out of order would label every hit wrongly
  code, line = error(query + [f"--index={out}"])
  assert code == 1 and "names.npy is missing or damaged" in line
  # The gallery flags do not go with an index (they would be ignored).
  code, line = error(query + [f"--index={out}"] + own_gallery["flags"][:1])
  assert code == 1 and "--index holds its gallery: drop --gallery_csv" in line
  # An index is never overwritten.
  code = run_main(index, [f"--workdir={workdir}", "--modality=music", f"--out={out}"] + own_gallery["flags"])
  assert "already exists; give a new folder" in code
