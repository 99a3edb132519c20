"""Turn a chapter into a lab: a student copy without the solutions.

``python -m lrp_teach.labs student book/03_lrp.ipynb -o labs/`` writes ``labs/03_lrp.ipynb``
in which

* every block between a ``{solution-start}`` and its ``{solution-end}`` directive is removed
  from the markdown cells (such a block may span several cells);
* every code cell tagged ``solution`` (or lying inside such a block) is replaced by a stub:
  functions keep their signature and docstring but raise :class:`NotImplementedError` with a
  hint; other code becomes a comment asking for the learner's code;
* outputs and execution counts are cleared.

The checker cells (``lt.exercises.check_...``) stay, so a learner runs them on their own code.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["main", "student_copy", "student_notebook"]

_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}\s*(\S*)")
_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}")


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _stub(code: str, label: str | None, checked: bool = True) -> str:
    """Replace function bodies by ``raise NotImplementedError``; keep signatures and docstrings.

    ``checked`` says whether a checker cell follows for this exercise; only then does the hint
    send the learner to it.
    """
    where = f" (exercise {label})" if label else ""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # IPython magics etc.: leave only a prompt
        tree = None
    functions = [n for n in (tree.body if tree else []) if isinstance(n, ast.FunctionDef)]
    if not functions:
        return f"# Your code{where} goes here.\n"
    lines = code.splitlines()
    parts = []
    for fn in functions:
        header_end = fn.body[0].lineno - 1  # lines before the first body statement
        header = lines[fn.lineno - 1 - len(fn.decorator_list) : header_end]
        doc = ast.get_docstring(fn)
        indent = " " * (fn.col_offset + 4)
        body = []
        if doc is not None:
            body.append(indent + '"""' + doc.replace('"""', "'''") + '"""')
        then = ", then run the checker below." if checked else "."
        hint = f"Write `{fn.name}`{where}{then}"
        body.append(f"{indent}raise NotImplementedError({hint!r})")
        parts.append("\n".join(header + [textwrap.indent(b, "") for b in body]))
    return "\n\n\n".join(parts) + "\n"


def _checked_after(cells: list[dict[str, Any]]) -> list[bool]:
    """For each cell: does a checker call follow before the next exercise starts?"""
    out = [False] * len(cells)
    seen = False
    for i in range(len(cells) - 1, -1, -1):
        src = _source(cells[i])
        if cells[i]["cell_type"] == "code" and "lt.exercises.check_" in src:
            seen = True
        out[i] = seen
        if cells[i]["cell_type"] == "markdown" and "{exercise}" in src:
            seen = False
    return out


def student_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """Return a student copy of a notebook (as a JSON dict); ``nb`` is not modified."""
    out = copy.deepcopy(nb)
    cells = []
    inside = False
    label: str | None = None
    checked = _checked_after(out["cells"])
    for index, cell in enumerate(out["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
            if "solution" in tags or inside:
                cell["source"] = _stub(_source(cell), label, checked[index])
                cell["metadata"]["tags"] = [t for t in tags if t != "solution"] + ["stub"]
            cells.append(cell)
            continue
        if cell["cell_type"] != "markdown":
            cells.append(cell)
            continue
        kept: list[str] = []
        skip_fence: str | None = None  # a directive's closing fence still to be dropped
        for line in _source(cell).splitlines(keepends=True):
            if skip_fence is not None:
                if line.strip() == skip_fence:
                    skip_fence = None
                continue
            if not inside:
                match = _START.match(line)
                if match:
                    inside, label, skip_fence = True, match.group(2) or None, match.group(1)
                else:
                    kept.append(line)
                continue
            end = _END.match(line)
            if end:
                inside, skip_fence = False, end.group(1)
        text = "".join(kept)
        if text.strip():
            cell["source"] = text.rstrip("\n")
            cells.append(cell)
    if inside:
        raise ValueError(f"a {{solution-start}} block ({label}) is never closed")
    out["cells"] = cells
    out.setdefault("metadata", {}).pop("widgets", None)
    return out


def student_copy(path: str | Path, out_dir: str | Path, keep_existing: bool = False) -> Path:
    """Write the student copy of the notebook at ``path`` into ``out_dir``; return its path.

    With ``keep_existing``, a copy that is already there (perhaps with a learner's work in it)
    is left as it is.
    """
    path = Path(path)
    target = Path(out_dir) / path.name
    if keep_existing and target.exists():
        return target
    nb = json.loads(path.read_text(encoding="utf-8"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(student_notebook(nb), indent=1) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lrp_teach.labs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    student = sub.add_parser("student", help="write student copies without solutions")
    student.add_argument("notebooks", nargs="+", help="chapter notebooks (.ipynb)")
    student.add_argument("-o", "--out", default="labs", help="output folder (default: labs/)")
    student.add_argument("--keep-existing", action="store_true",
                         help="leave copies that already exist (a learner's work) unchanged")
    args = parser.parse_args(argv)
    for notebook in args.notebooks:
        target = Path(args.out) / Path(notebook).name
        existed = target.exists()
        path = student_copy(notebook, args.out, keep_existing=args.keep_existing)
        print(f"{path} (kept)" if args.keep_existing and existed else path)


if __name__ == "__main__":
    main()
