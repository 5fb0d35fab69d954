"""The run report (`emvgan_jax/evaluation/report.py`): the retrieved examples against a brute-force ranking, the YouTube
links, escaping, and the page rendered in a real browser (Debian's headless Chromium) with every image loaded."""

import html
import os
import shutil

import numpy as np
import pytest
from helpers import run_main

from emvgan_jax.evaluation import protocol, report
from emvgan_jax.tools import evaluate


def test_youtube_links_only_for_the_sets_named_by_youtube_id():
  assert report.youtube_url("7ZIKT6L83ak", "emomv/b") == "https://www.youtube.com/watch?v=7ZIKT6L83ak"
  assert report.youtube_url("yA9WhYnsD_4_06", "emomv/c") == "https://www.youtube.com/watch?v=yA9WhYnsD_4"
  assert report.youtube_url("-Wz9_Q5Um1c", "emomv/c") == "https://www.youtube.com/watch?v=-Wz9_Q5Um1c"
  assert report.youtube_url("exciting/clip_12.mp4", "emomv/a") is None
  assert report.youtube_url("yA9WhYnsD_4_06", "emomv/a") is None  # EmoMV-A's names are MVED files
  assert report.youtube_url("short_01", "emomv/c") is None


def test_retrieved_examples_are_the_cosine_top_k():
  rng = np.random.default_rng(3)
  n, d = 12, 5
  video, music = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=(n, 1))
  emotion = rng.integers(0, 5, size=n)
  names = np.asarray([f"item{i}" for i in range(n)])
  out = report.retrieved_examples({"name": names, "emotion": emotion, "video": video, "music": music}, k=3)
  assert set(out) == {"video_to_music", "music_to_video"} and len(out["video_to_music"]) == 8
  for direction, (q_emb, g_emb) in {"video_to_music": (video, music), "music_to_video": (music, video)}.items():
    for row in out[direction]:
      q = int(row["query"][4:])
      cos = [q_emb[q] @ g_emb[i] / np.linalg.norm(q_emb[q]) / np.linalg.norm(g_emb[i]) for i in range(n)]
      want = sorted(range(n), key=lambda i: -cos[i])[:3]
      assert [int(it["name"][4:]) for it in row["items"]] == want
      assert [it["score"] for it in row["items"]] == pytest.approx([cos[i] for i in want])
      assert [it["same_emotion"] for it in row["items"]] == [bool(emotion[i] == emotion[q]) for i in want]
      assert [it["counterpart"] for it in row["items"]] == [i == q for i in want]


def test_the_page_shows_every_table_row_and_escapes_names(tmp_path):
  results = {
    "dataset": "emomv/c",
    "model": "emvgan",
    "description": "EMVGAN <test>",
    "classification": {"split": "validation", "num_pairs": 4, "accuracy": 0.5, "f1": 0.25, "roc_auc": 0.75},
    "chance": {"classification": {"accuracy": 0.5, "f1": 0.5, "roc_auc": 0.5}},
  }
  examples = {
    "video_to_music": [
      {
        "query": "yA9WhYnsD_4_06",
        "emotion": 0,
        "items": [{"name": "<b>x</b>", "emotion": 1, "score": 0.5, "same_emotion": False, "counterpart": False}],
      }
    ]
  }
  page = open(report.write_report(str(tmp_path), results, plots={}, examples=examples), encoding="utf-8").read()
  assert "EMVGAN &lt;test&gt;" in page and "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
  assert '<a href="https://www.youtube.com/watch?v=yA9WhYnsD_4">yA9WhYnsD_4_06</a>' in page
  for _, _, rows in protocol.result_tables(results):
    for row in rows:
      assert "".join(f"<td>{html.escape(c)}</td>" for c in row) in page
  assert not (tmp_path / "report.html.tmp").exists()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(
  not (CHROMIUM and CHROMEDRIVER),
  reason="needs Debian's chromium and chromium-driver (.ci/run installs them with apt-get)",
)
def test_the_report_renders_in_a_browser_with_every_image_loaded(tiny_run, tmp_path):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top

  out = tmp_path / "eval"
  assert run_main(evaluate, [f"--workdir={tiny_run.workdir}", f"--out_dir={out}", "--svg"]) is None
  for name in ("training_curves", "precision_recall", "embedding_pca", "confusion_matrix"):
    assert (out / f"{name}.svg").stat().st_size > 1000 and (out / f"{name}.png").exists()
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
  flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
  for flag in flags + [f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]:
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    driver.get("file://" + os.path.abspath(out / "report.html"))
    images = driver.execute_script(
      "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);"
    )
    tables = driver.execute_script("return document.querySelectorAll('table').length;")
    title = driver.title
  finally:
    driver.quit()
  assert len(images) == 4, images
  assert all(complete and width > 100 and height > 100 for complete, width, height, _ in images), images
  # classification, retrieval, what the emotion weight trades, alignment, and the retrieved items both ways
  assert tables == 6
  assert title.startswith("EMVGAN on emomv/c")
