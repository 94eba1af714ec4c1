"""Every piece of CuPy-only code is listed in docs/cuda.md, with its portable twin and the
``gpu``-marked test that checks it against the twin; nothing CuPy-only hides elsewhere.

A line is CuPy-only when its code (not a comment or docstring) names ``cupy`` (``import
cupy``, ``_is_cupy_namespace``, ``_CUPY_KERNELS``) or holds a string starting with ``"cupy"``
(a module name, a registry key). ``scratchae/doctor.py`` is left out: inspecting the CUDA
install is its one job.
"""
import ast
import io
import pathlib
import re
import tokenize

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cuda.md"


def _docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def _functions(tree):
    """(first line, last line, qualified name) of every function, innermost last."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out.append((child.lineno, child.end_lineno, name))
                visit(child, name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return out


def cupy_places():
    """``module.function`` (or ``module.<module>``) -> the CuPy-only lines in it."""
    places = {}
    for path in sorted((ROOT / "scratchae").rglob("*.py")):
        if path.name == "doctor.py":
            continue
        text = path.read_text()
        tree = ast.parse(text)
        skip, funcs = _docstring_lines(tree), _functions(tree)
        module = ".".join(path.relative_to(ROOT / "scratchae").with_suffix("").parts)
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            row = tok.start[0]
            if row in skip:
                continue
            named = tok.type == tokenize.NAME and "cupy" in tok.string.lower()
            literal = tok.type == tokenize.STRING and re.match(r"^[rbf]*['\"]cupy", tok.string)
            if not (named or literal):
                continue
            inside = [f for f in funcs if f[0] <= row <= f[1]]
            where = max(inside, key=lambda f: f[0])[2] if inside else "<module>"
            places.setdefault(f"{module}.{where}", set()).add(row)
    return places


def listed_places():
    """The first column of the table under '## Every CuPy-only line' in docs/cuda.md."""
    text = DOC.read_text()
    section = text.split("## Every CuPy-only line", 1)[1].split("\n## ", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `([\w.<>]+)` \|", section, re.M)}


def test_every_cupy_only_place_is_listed_with_its_twin_and_test():
    found, listed = set(cupy_places()), listed_places()
    assert found, "the scan found no CuPy code at all: it is broken"
    assert not found - listed, f"CuPy-only code not listed in docs/cuda.md: {sorted(found - listed)}"
    assert not listed - found, f"docs/cuda.md lists places with no CuPy code: {sorted(listed - found)}"


def _is_gpu_marked(src, name):
    """The test is marked gpu, or runs on a parameter/fixture that is (``pytest.param("cuda",
    marks=pytest.mark.gpu)``, or the ``device`` fixture of conftest.py, which includes it)."""
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            marks = " ".join(ast.get_source_segment(src, d) for d in node.decorator_list)
            return "gpu" in marks or "device" in [a.arg for a in node.args.args]
    return False


def test_each_listed_gpu_test_exists_and_is_gpu_marked():
    section = DOC.read_text().split("## Every CuPy-only line", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `")]
    sources = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}
    for row in rows:
        tests = re.findall(r"`(test_\w+\.py)::(test_\w+)`", row)
        assert tests, f"no gpu test named in: {row}"
        for file, name in tests:
            assert _is_gpu_marked(sources.get(file, ""), name), \
                f"{file}::{name} does not exist or is not a gpu-marked test"


def test_the_scan_sees_cupy_code():
    """The scanner itself: it finds a CuPy line in code and ignores one in a docstring."""
    places = cupy_places()
    assert "backend.to_numpy" in places and "fast._bce_cupy" in places
    assert "losses.bce_with_logits" not in places          # CuPy only in its docstring
