import ast
import json
from pathlib import Path

import pytest

import lrp_teach as lt

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _cell(kind, source, tags=None):
    cell = {"cell_type": kind, "metadata": {"tags": tags or []}, "source": source}
    if kind == "code":
        cell.update(outputs=[{"output_type": "stream", "text": "x"}], execution_count=3)
    return cell


def test_solution_blocks_spanning_cells_are_removed_and_code_stubbed():
    nb = {
        "metadata": {},
        "cells": [
            _cell(
                "markdown",
                "```{exercise} E\n:label: ex-a\n\nDo it.\n```\n\n"
                "```{solution-start} ex-a\n:class: dropdown\n```\nSECRET prose",
            ),
            _cell("code", 'def f(x):\n    """Doc."""\n    return x + 1\n', ["solution"]),
            _cell("markdown", "more SECRET\n\n```{solution-end}\n```\n\n## After"),
            _cell("code", "lt.exercises.check_something(f)"),
        ],
    }
    out = lt.labs.student_notebook(nb)
    text = json.dumps(out)
    assert "SECRET" not in text and "return x + 1" not in text
    assert "Do it." in text and "## After" in text and "check_something" in text
    stub = next(c for c in out["cells"] if "stub" in c["metadata"]["tags"])
    namespace = {}
    exec(stub["source"], namespace)
    with pytest.raises(NotImplementedError, match="Write `f` .*ex-a"):
        namespace["f"](1)
    assert all(c.get("outputs", []) == [] for c in out["cells"] if c["cell_type"] == "code")
    assert "SECRET" in json.dumps(nb)  # the original is untouched


def test_unclosed_solution_block_is_an_error():
    nb = {"metadata": {}, "cells": [_cell("markdown", "```{solution-start} ex-b\n```\n")]}
    with pytest.raises(ValueError, match="never closed"):
        lt.labs.student_notebook(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_a_clean_student_copy(path, tmp_path):
    copy = json.loads(lt.labs.student_copy(path, tmp_path).read_text())
    original = json.loads(path.read_text())
    stubs = [c for c in copy["cells"] if "stub" in c["metadata"].get("tags", [])]
    assert stubs, f"{path.name}: no solution code was stubbed"
    markdown = "\n".join(
        "".join(c["source"]) for c in copy["cells"] if c["cell_type"] == "markdown"
    )
    assert "{solution-start}" not in markdown and "{solution-end}" not in markdown
    for cell in copy["cells"]:
        if cell["cell_type"] == "code" and not "".join(cell["source"]).lstrip().startswith(
            ("%", "!")
        ):
            try:
                ast.parse("".join(cell["source"]))
            except SyntaxError:
                assert "google.colab" in "".join(cell["source"]), f"{path.name}: broken stub"
    solutions = [c for c in original["cells"] if "solution" in c["metadata"].get("tags", [])]
    graded = [c for c in solutions if "def " in "".join(c["source"])]
    raising = [s for s in stubs if "NotImplementedError" in "".join(s["source"])]
    assert len(raising) >= min(1, len(graded)), f"{path.name}: graded exercise left without stub"


def test_keep_existing_leaves_a_learners_copy_alone(tmp_path):
    source = ROOT / "book" / "03_lrp.ipynb"
    target = lt.labs.student_copy(source, tmp_path)
    target.write_text('{"learner": "work in progress"}')
    lt.labs.student_copy(source, tmp_path, keep_existing=True)
    assert "work in progress" in target.read_text()
    lt.labs.main(["student", str(source), "-o", str(tmp_path)])
    assert "work in progress" not in target.read_text()


def test_stub_promises_a_checker_only_when_one_follows():
    nb = {
        "metadata": {},
        "cells": [
            _cell("markdown", "```{exercise} A\n:label: ex-a\n```\n```{solution-start} ex-a\n```"),
            _cell("code", "def f(x):\n    return x\n", ["solution"]),
            _cell("markdown", "```{solution-end}\n```"),
            _cell("code", "lt.exercises.check_f(f)"),
            _cell("markdown", "```{exercise} B\n:label: ex-b\n```\n```{solution-start} ex-b\n```"),
            _cell("code", "def g(x):\n    return x\n", ["solution"]),
            _cell("markdown", "```{solution-end}\n```"),
        ],
    }
    stubs = [c["source"] for c in lt.labs.student_notebook(nb)["cells"]
             if "stub" in c["metadata"].get("tags", [])]
    assert "run the checker below" in stubs[0]
    assert "checker" not in stubs[1] and "Write `g` (exercise ex-b)." in stubs[1]
