"""The notebooks under docs/notebooks/: each runs top to bottom, and each is committed clean.

Execution: every notebook is run with nbclient in a fresh kernel of *this* interpreter
(ipykernel's native kernel spec, which jupyter_client builds from ``sys.executable``;
installed kernel specs are ignored, so a ``python3`` spec of another environment cannot be
picked up), from the notebooks' folder, with the inline matplotlib backend and a timeout
per cell. A failing cell fails the test with its source and traceback.

Static checks (no kernel): outputs stripped, at least one gradient check and one figure per
notebook, the guarded install cell first, only public names of scratchae, seeded randomness,
each notebook listed in docs/notebooks/README.md, and every .ipynb the same as what
``docs/notebooks/build.py`` makes from its source in ``docs/notebooks/src/``.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = ROOT / "docs" / "notebooks"
NOTEBOOKS = sorted(HERE.glob("*.ipynb"))
CELL_TIMEOUT = 120          # seconds per cell; a whole notebook takes ~3-16 s on 2 cores

#: what every notebook's source must contain at least once
GRADIENT_CHECK = re.compile(r"\bcheck_(layer|objective|function)\(")
FIGURE = re.compile(r"\bplt\.show\(\)")


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _code(path) -> str:
    return "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    for stem in ("01_backprop_by_hand", "02_write_your_own_layer", "02_write_your_own_layer_solutions",
                 "03_autoencoders_and_denoising", "04_vae", "05_adversarial_autoencoder",
                 "06_convolution_by_hand"):
        assert f"{stem}.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
        assert "execution" not in cell.get("metadata", {}), f"{path.name} cell {i} has execution metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_checks_a_gradient_and_draws_a_figure(path):
    code = _code(path)
    assert GRADIENT_CHECK.search(code), f"{path.name}: no check_layer / check_objective / check_function call"
    assert FIGURE.search(code), f"{path.name}: no figure (plt.show())"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_starts_with_how_to_run_and_a_guarded_install(path):
    cells = _cells(path)
    intro, install = "".join(cells[0]["source"]), "".join(cells[1]["source"])
    assert cells[0]["cell_type"] == "markdown" and intro.startswith("# ")
    assert 'pip install -e ".[dev]"' in intro and "Colab" in intro, f"{path.name}: the intro says how to run it"
    assert cells[1]["cell_type"] == "code"
    assert 'importlib.util.find_spec("scratchae") is None' in install and "pip" in install, \
        f"{path.name}: the second cell installs scratchae only when it is not importable"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_uses_public_names_and_seeded_randomness(path):
    code = _code(path)
    private = re.findall(r"\._[A-Za-z]\w*|\bimport _\w+|from scratchae\S* import .*\b_[a-z]\w*", code)
    assert not private, f"{path.name} uses private names: {private}"
    assert not re.search(r"np\.random\.|\brandom\.seed|Generator\(\s*\)", code), \
        f"{path.name}: draw random numbers from a seeded scratchae.backend.Generator(seed)"


def test_every_notebook_is_listed_in_the_readme():
    readme = (HERE / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"]({path.name})" in readme, f"docs/notebooks/README.md does not link {path.name}"
    for page in (ROOT / "README.md", ROOT / "docs" / "README.md"):
        assert "notebooks/README.md" in page.read_text(), f"{page.relative_to(ROOT)} does not link the notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_links_resolve(path):
    """Every relative link in a markdown cell names a file of the repository."""
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] == "markdown":
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", "".join(cell["source"])):
                if "://" not in target:
                    assert (HERE / target).exists(), f"{path.name} cell {i}: broken link {target}"


def test_install_cell_outside_a_clone_says_what_to_set(tmp_path):
    """Where scratchae is not importable and no clone is around (a bare Colab kernel), the
    install cell stops with one line naming SOURCE, before any pip call."""
    import subprocess
    cell = "".join(_cells(NOTEBOOKS[0])[1]["source"])
    # -S: no site-packages, so the editable install of scratchae is not importable
    proc = subprocess.run([sys.executable, "-S", "-c", cell], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "RuntimeError: scratchae is not installed: set SOURCE" in proc.stderr.strip().splitlines()[-1]


def test_notebooks_match_their_sources():
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location("notebook_build", HERE / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert set(build.targets()) == {p.name for p in NOTEBOOKS}
    assert build.stale() == [], "run python docs/notebooks/build.py and commit the .ipynb files"


def _this_interpreters_kernel():
    """A KernelManager for ipykernel's native kernel, i.e. sys.executable -m ipykernel_launcher."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[])          # no installed specs: only the native one
    spec = specs.get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable, (spec.argv, sys.executable)
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def _execute(nb, name, monkeypatch):
    """Run nb in a fresh kernel of this interpreter; fail the test with the cell that raised."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    from nbclient.exceptions import CellExecutionError

    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")   # no debugger warning on stderr
    client = nbclient.NotebookClient(nb, km=_this_interpreters_kernel(), timeout=CELL_TIMEOUT,
                                     startup_timeout=60, resources={"metadata": {"path": str(HERE)}})
    try:
        client.execute()
    except CellExecutionError as err:
        pytest.fail(f"{name}: a cell raised\n{err}", pytrace=False)


def _printed(nb) -> str:
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.get("output_type") == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    _execute(nb, path.name, monkeypatch)
    seconds = time.perf_counter() - start
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    assert images >= 1, f"{path.name} ran but showed no figure"
    print(f"{path.name}: {seconds:.1f} s, {images} figure(s)")


def test_exercises_report_a_wrong_backward_and_still_run_to_the_end(monkeypatch):
    """A student's Swish backward that crashes (a parameter gradient not summed over the batch:
    a += of the wrong shape) and a LayerNorm backward that is simply wrong: both graded, neither
    stops the notebook, and the summary names each verdict."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(HERE / "02_write_your_own_layer.ipynb", as_version=4)
    answers = {
        'raise NotImplementedError("Swish.backward is still blank")':
            'self.grads["beta"] += dy * x * x * s * (1 - s); return dy * s   # beta not summed over N',
        'raise NotImplementedError("LayerNorm.backward is still blank")':
            'return dy * self.params["gamma"] * r                            # the two mean terms missing',
    }
    for blank, answer in answers.items():
        cells = [c for c in nb.cells if c.cell_type == "code" and blank in c.source]
        assert len(cells) == 1, f"the exercise notebook has no single cell with {blank!r}"
        cells[0].source = cells[0].source.replace(blank, answer)
    _execute(nb, "02_write_your_own_layer.ipynb with wrong answers", monkeypatch)
    printed = _printed(nb)
    assert "Swish: your backward raised ValueError" in printed, printed[-2000:]
    assert "LayerNorm: FAILED" in printed, printed[-2000:]
    summary = [line.split() for line in printed.splitlines() if line.startswith(("Swish ", "LayerNorm "))]
    assert ["Swish", "error"] in summary and ["LayerNorm", "FAILED"] in summary, summary
