"""Notebook hygiene: stored without outputs, python3 kernel, listed in the table of contents,
and every chapter opens with the same Colab-guarded set-up cell."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", []))
    walk(toc.get("chapters", []))
    return files


def _resolve(entry: str) -> Path | None:
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in book/"


def test_every_toc_entry_exists():
    missing = [entry for entry in _toc_files() if _resolve(entry) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_notebook_is_in_the_toc():
    listed = {_resolve(entry) for entry in _toc_files()}
    unlisted = [nb.name for nb in NOTEBOOKS if nb not in listed]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: stored widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_kernel_is_python3(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_title_and_setup_cell(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown", f"{path.name}: first cell must be the title"
    title = "".join(cells[0]["source"])
    assert re.match(r"#\s+\d+\.\s+\S", title), f"{path.name}: title must read '# N. Title'"
    for word in ("objectives", "prerequisites", "lab time"):
        assert word in title.lower(), f"{path.name}: the summary must state the {word}"
    setup = next(c for c in cells if c["cell_type"] == "code")
    source = "".join(setup["source"])
    assert "remove-input" in setup.get("metadata", {}).get("tags", []), (
        f"{path.name}: the set-up cell must be tagged remove-input"
    )
    url = _config()["repository"]["url"]
    assert '"google.colab" in sys.modules' in source, f"{path.name}: set-up cell lacks Colab guard"
    assert url in source, f"{path.name}: set-up cell must clone {url} (the URL in _config.yml)"
    assert "set_book_defaults" in source, f"{path.name}: set-up cell must seed and set threads"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_exercises_with_solutions_and_summary(path):
    nb = json.loads(path.read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    labels = re.findall(r"```\{exercise\}[^\n]*\n:label: (\S+)", text)
    assert len(labels) >= 2, f"{path.name}: needs at least two exercises, found {len(labels)}"
    for label in labels:
        assert re.search(r"```\{solution-start\} " + re.escape(label), text), (
            f"{path.name}: exercise {label} has no solution"
        )
    assert text.count("{solution-start}") == text.count("{solution-end}"), path.name
    solution_cells = [c for c in nb["cells"] if "solution" in c.get("metadata", {}).get("tags", [])]
    assert solution_cells, f"{path.name}: solution code cells must be tagged 'solution'"
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "lt.exercises.check_" in code, f"{path.name}: no exercise is graded by a checker"
    assert re.search(r"^#+ .*(summary|remember)", text, re.I | re.M), f"{path.name}: no summary"
    assert "{cite}" in text, f"{path.name}: cites nothing"


def test_cited_keys_exist_in_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    sources = [p.read_text() for p in NOTEBOOKS] + [p.read_text() for p in ROOT.glob("book/*.md")]
    cited = set()
    for source in sources:
        for group in re.findall(r"\{cite[pt]?(?::[a-z]+)?\}`([^`]+)`", source):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citations found"
    assert not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_no_top_level_static_folder():
    assert not (ROOT / "_static").exists(), (
        "a top-level _static/ makes Jupyter Book inject every script into every page"
    )
