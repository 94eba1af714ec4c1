r"""Build the notebooks in this folder from their sources in ``src/``.

The ``.ipynb`` files are what readers open; ``src/*.py`` are what contributors edit (plain
Python, reviewable as text). After editing a source, rebuild and commit both::

    python docs/notebooks/build.py            # writes every .ipynb, outputs stripped
    python docs/notebooks/build.py --check    # exit 1 if a committed .ipynb is out of date

A source is a sequence of cells, each starting with a header line:

``# %%``                 a code cell: the lines up to the next header
``# %% [markdown]``      a markdown cell: one raw string literal ``r\"\"\"...\"\"\"``
``... {only=exercise}``  or ``{only=solution}`` after either header: the cell goes only
                         into that version of a notebook with exercises
``# %% {include=_x.py}`` a code cell whose code is the file ``src/_x.py``: what every
                         notebook needs (the install cell) is written once; each built
                         notebook still holds its own copy, so it opens on its own

A source whose name is listed in ``EXERCISES`` gives two notebooks, ``<name>.ipynb`` with
the exercises left blank and ``<name>_solutions.ipynb``. Inside its cells, the lines
between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` go only into the solutions, and a line
``# EXERCISE: code`` becomes ``code`` (same indentation) in the exercises only.

Cell ids are the cell's position, so building twice gives the same bytes.
"""
from __future__ import annotations

import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "src"

#: sources that make an exercise notebook and a solutions notebook
EXERCISES = ("02_write_your_own_layer",)

_HEADER = re.compile(r"^# %%(?P<md> \[markdown\])?(?: \{only=(?P<only>exercise|solution)\})?"
                     r"(?: \{include=(?P<include>_[\w.]+\.py)\})?\s*$")
_EXERCISE_LINE = re.compile(r"^(?P<indent>\s*)# EXERCISE: ?(?P<code>.*)$")

METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def parse(text: str, source: str = "source"):
    """``[(kind, only, lines)]``: kind "code" or "markdown", only None / "exercise" / "solution"."""
    cells, current, included = [], None, False
    for n, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            current = ("markdown" if m.group("md") else "code", m.group("only"), [])
            cells.append(current)
            included = m.group("include") is not None
            if included:
                current[2].extend((SRC / m.group("include")).read_text().splitlines())
        elif current is None or included:
            if line.strip():
                where = "before the first '# %%' header" if current is None else "after an include"
                raise ValueError(f"{source}:{n}: text {where}")
        else:
            current[2].append(line)
    return cells


def _variant(lines, version):
    """The lines of a cell for ``version`` ("plain", "exercise" or "solution")."""
    out, in_solution = [], False
    for line in lines:
        stripped = line.strip()
        if stripped == "# BEGIN SOLUTION":
            in_solution = True
            continue
        if stripped == "# END SOLUTION":
            in_solution = False
            continue
        m = _EXERCISE_LINE.match(line)
        if m:
            if version == "exercise":
                out.append(m.group("indent") + m.group("code"))
            continue
        if in_solution and version == "exercise":
            continue
        out.append(line)
    return out


def _markdown(lines, where):
    body = "\n".join(lines).strip()
    if not (body.startswith('r"""') and body.endswith('"""')):
        raise ValueError(f"{where}: a markdown cell is one raw string r\"\"\"...\"\"\"")
    return body[4:-3].strip("\n")


def render(name: str, version: str = "plain") -> str:
    """The .ipynb text of source ``src/<name>.py`` in ``version``."""
    import nbformat
    from nbformat import v4

    text = (SRC / f"{name}.py").read_text()
    nb = v4.new_notebook(metadata=METADATA)
    for i, (kind, only, lines) in enumerate(parse(text, f"src/{name}.py")):
        if only is not None and only != version:
            continue
        lines = _variant(lines, version)
        cell_id = f"cell-{len(nb.cells):02d}"
        if kind == "markdown":
            nb.cells.append(v4.new_markdown_cell(_markdown(lines, f"src/{name}.py cell {i}"), id=cell_id))
        else:
            nb.cells.append(v4.new_code_cell("\n".join(lines).strip("\n"), id=cell_id))
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def targets() -> dict:
    """``{notebook file name: its text}`` for every source."""
    out = {}
    for src in sorted(SRC.glob("*.py")):
        name = src.stem
        if name.startswith("_"):             # a shared cell, not a notebook
            continue
        if name in EXERCISES:
            out[f"{name}.ipynb"] = render(name, "exercise")
            out[f"{name}_solutions.ipynb"] = render(name, "solution")
        else:
            out[f"{name}.ipynb"] = render(name)
    return out


def stale() -> list:
    """Notebook names whose committed file differs from what the sources give."""
    return [n for n, text in targets().items()
            if not (HERE / n).is_file() or (HERE / n).read_text() != text]


def main(argv) -> int:
    if "--check" in argv:
        bad = stale()
        for n in bad:
            print(f"docs/notebooks/{n} is out of date: run python docs/notebooks/build.py")
        return 1 if bad else 0
    for n, text in targets().items():
        path = HERE / n
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote docs/notebooks/{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
