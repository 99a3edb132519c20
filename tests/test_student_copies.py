"""Every chapter's student copy runs, top to bottom, until the first exercise stub.

This executes each student copy (written by ``python -m lrp_teach.labs student``) in a fresh
kernel: the copy must run without error up to the first ``NotImplementedError`` raised by a
stub, so that a learner starts from a working notebook. Run by ``make labs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

import lrp_teach as lt

pytestmark = pytest.mark.student

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_runs_until_the_first_stub(path, tmp_path):
    copy = lt.labs.student_copy(path, tmp_path)
    nb = nbformat.reads(copy.read_text(encoding="utf-8"), as_version=4)
    stubs = [c for c in nb.cells if "stub" in c.metadata.get("tags", [])]
    raising = [c for c in stubs if "NotImplementedError" in c.source]
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    except CellExecutionError as error:
        stub_hit = error.ename == "NotImplementedError" or (
            error.ename == "ExerciseError" and "NotImplementedError" in error.evalue
        )  # a checker may report the stub's error in its own words
        assert stub_hit, (
            f"{path.name}: the student copy fails before the first stub with {error.ename}: "
            f"{error.evalue}"
        )
        assert "Write `" in error.evalue, f"{path.name}: stub without a hint: {error.evalue}"
        return
    assert not raising, f"{path.name}: the stubs never raised; are the checkers called?"
    json.dumps(nb)  # executed without error: a copy with only prose exercises
