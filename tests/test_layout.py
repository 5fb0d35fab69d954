"""The package keeps the shape docs/architecture.md describes: the tools never import the trainer, no function is
longer than 80 lines, and README's Layout section names every module."""

import ast
import pathlib
import subprocess
import sys

import pytest

import emvgan_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("emvgan_jax", "tfds_emomv")


def _modules():
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      if path.name != "__init__.py":
        yield path.relative_to(ROOT)


@pytest.mark.slow
def test_evaluate_and_retrieve_do_not_import_the_training_loop():
  code = "import emvgan_jax.evaluate, emvgan_jax.retrieve, sys; print('emvgan_jax.train' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_no_function_is_longer_than_80_lines():
  long = []
  for rel in _modules():
    for node in ast.walk(ast.parse((ROOT / rel).read_text())):
      if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 80:
        long.append(f"{rel}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
  assert not long


def test_readme_layout_names_every_module():
  readme = (ROOT / "README.md").read_text()
  layout = readme[readme.index("## Layout") :].split("\n## ", 1)[0]
  missing = []
  for rel in _modules():
    if "dummy_data" in rel.parts:
      continue
    folder_listed = any(f"{rel.parent.as_posix()}/" in line and rel.name in line for line in layout.splitlines())
    if rel.as_posix() not in layout and not folder_listed:
      missing.append(rel.as_posix())
  assert not missing


def test_version_is_the_package_metadata_version():
  parts = emvgan_jax.__version__.split(".")
  assert len(parts) == 3 and all(p.isdigit() for p in parts)
  assert "version = attr: emvgan_jax.__version__" in (ROOT / "setup.cfg").read_text()
