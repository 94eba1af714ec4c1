"""The demos, run as a user would (a subprocess in an empty folder, no network), and the one
figure a demo draws itself (demos/ae.py's tied vs untied curves)."""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("matplotlib")

DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"


def tree(folder):
    """{relative path: (size, mtime)} of the files under ``folder``, bytecode caches aside."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_ae_demo_writes_into_out_of_the_working_directory_not_the_clone(tmp_path):
    before = tree(DEMOS)
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHAE_DATA"}
    env.update(HOME=str(tmp_path / "home"), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, str(DEMOS / "ae.py"), "--epochs", "1", "--data", "bundled"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = work / "out" / "ae"
    for png in ("loss_curves.png", "reconstructions.png", "tied_vs_untied.png"):
        assert (out / png).stat().st_size > 1000, png
    assert f"figures: {os.path.join('out', 'ae', 'loss_curves.png')}" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert tree(DEMOS) == before, "the demo wrote under the repository's demos/"


@pytest.fixture
def demo_module(monkeypatch):
    """Import a demo script as a module (its ``_common`` from demos/), leaving the
    environment variables ``_common`` sets by default as they were."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(DEMOS))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def load(name):
        spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMOS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def test_default_out_is_out_name_in_the_current_folder(demo_module, tmp_path, monkeypatch):
    demo_module("ae")
    import _common
    monkeypatch.chdir(tmp_path)
    p = _common.parser("ae", "doc", epochs=1)
    assert p.parse_args([]).out == os.path.join(str(tmp_path), "out", "ae")
    assert "out/ae" in p.format_help()
    assert p.parse_args(["--out", "elsewhere"]).out == "elsewhere"


class _Model:
    def __init__(self, n):
        self.n = n

    def num_parameters(self):
        return self.n


def test_tied_vs_untied_shows_every_point(demo_module):
    import matplotlib.pyplot as plt
    ae = demo_module("ae")
    curve = [310.0, 180.0, 140.0, 120.0, 110.0, 104.0, 100.0]     # epoch 1 is 3x the last
    results = {name: (_Model(n), [{"epoch": e + 1, "test_recon": v * s, "train_recon": v * s * 1.01}
                                  for e, v in enumerate(curve)], 1.0)
               for name, n, s in (("untied", 654416, 1.0), ("tied", 328016, 1.1))}
    fig = ae.tied_vs_untied_figure(results)
    try:
        ax = fig.axes[0]
        lo, hi = ax.get_ylim()
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert len(ys) == 4 * len(curve)
        assert lo < min(ys) and max(ys) < hi
    finally:
        plt.close(fig)
