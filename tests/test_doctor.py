"""scratchae doctor: the report on this machine, the install-advice table, and run()'s verdict on
simulated machines (its probe functions monkeypatched), plus a real-GPU check."""
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from scratchae import doctor


def _report(args=("-m", "scratchae.doctor")):
    env = {k: v for k, v in os.environ.items() if k != "SCRATCHAE_REFERENCE"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


# --- (a) this machine ----------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("-m", "scratchae.doctor"), ("-m", "scratchae", "doctor")])
def test_report_on_this_machine_names_numpy_and_blas_and_never_a_traceback(command):
    proc = _report(command)
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    assert re.search(rf"^numpy:\s+{re.escape(np.__version__)}$", out, re.M), out
    assert re.search(r"^blas:\s+\S+ \S+, \d+ threads, ", out, re.M), out     # internal_api version, threads
    assert re.search(r"^reference mode:\s+off$", out, re.M), out
    if doctor.probe_driver().version is not None:       # a GPU machine: (d) checks the verdict
        assert proc.returncode in (0, 1), out + proc.stderr
        return
    assert proc.returncode == 0, out + proc.stderr      # CPU only, no NVIDIA driver: consistent
    assert re.search(r"^nvidia driver:\s+no NVIDIA driver found", out, re.M), out
    assert out.splitlines()[-1].startswith("status:") and "ok: CPU only" in out.splitlines()[-1]
    names = [line.split(":", 1)[0] for line in out.splitlines()]
    values_at = {line.index(line.split(":", 1)[1].strip()) for line in out.splitlines()}
    assert len(values_at) == 1, out                      # aligned: every value starts in one column
    assert "python" in names and "scratchae" in names and "array-api-compat" in names


def test_reference_mode_is_reported():
    env = dict(os.environ, SCRATCHAE_REFERENCE="1")
    proc = subprocess.run([sys.executable, "-m", "scratchae.doctor"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert re.search(r"^reference mode:\s+on$", proc.stdout, re.M), proc.stdout


def test_cuda_version_format():
    assert [doctor.cuda_version(v) for v in (12040, 13000, 11080, 12090, None)] == \
        ["12.4", "13.0", "11.8", "12.9", "none"]


FAKE_LIBCUDA = """
int cuDriverGetVersion(int *v) { *v = %d; return 0; }
int cuInit(unsigned int flags) { return %d; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
"""


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("cc") is None,
                    reason="needs Linux and a C compiler to build a stand-in libcuda.so.1")
@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy would load the stand-in")
@pytest.mark.parametrize("version, init, status, driver_line, last", [
    (12040, 0, 1, "CUDA 12.4, 1 GPU(s)", 'pip install -e ".[cuda12]"'),
    (13000, 0, 1, "CUDA 13.0, 1 GPU(s)", 'pip install -e ".[cuda13]"'),
    (12040, 100, 0, "CUDA 12.4, 0 GPU(s) cuInit fails with CUresult 100", "the NVIDIA driver sees no GPU"),
])
def test_the_driver_is_read_from_libcuda_with_ctypes(tmp_path, version, init, status, driver_line, last):
    (tmp_path / "fake.c").write_text(FAKE_LIBCUDA % (version, init))
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "libcuda.so.1"), str(tmp_path / "fake.c")],
                   check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "scratchae.doctor"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert re.search(rf"^nvidia driver:\s+{re.escape(driver_line)}", proc.stdout, re.M), proc.stdout
    assert last in proc.stdout.splitlines()[-1]


# --- (b) the decision table ----------------------------------------------------------------------
UPDATE_DRIVER = ("update the NVIDIA driver: it supports CUDA 11.8, and the CuPy wheels scratchae "
                 "supports (cupy-cuda12x, cupy-cuda13x) need CUDA 12 or 13")
ADVICE = [
    # driver, installed distributions, CuPy error, runtime -> the one command
    (None, [], None, None, None),                                   # CPU only: nothing to fix
    (None, ["cupy-cuda12x"], "cupy.is_available() is False", None, None),
    (13000, [], None, None, 'pip install -e ".[cuda13]"'),
    (13010, [], "ModuleNotFoundError: No module named 'cupy'", None, 'pip install -e ".[cuda13]"'),
    (12040, [], "ModuleNotFoundError: No module named 'cupy'", None, 'pip install -e ".[cuda12]"'),
    (11080, [], None, None, UPDATE_DRIVER),
    (11080, ["cupy-cuda12x"], "cudaErrorInsufficientDriver", 12080, UPDATE_DRIVER),
    (12040, ["cupy-cuda12x"], None, 12080, None),                   # minor versions are compatible
    (13000, ["cupy-cuda12x"], None, 12090, None),                   # an older CuPy on a newer driver
    (12040, ["cupy-cuda12x", "cupy-cuda13x"], None, None,
     'pip uninstall -y cupy-cuda12x cupy-cuda13x && pip install -e ".[cuda12]"'),
    (13000, ["cupy-cuda13x", "cupy-cuda12x"], None, 13000,
     'pip uninstall -y cupy-cuda12x cupy-cuda13x && pip install -e ".[cuda13]"'),
    (12040, ["cupy-cuda13x"], None, None, 'pip uninstall -y cupy-cuda13x && pip install -e ".[cuda12]"'),
    (12040, ["cupy"], None, 13000, 'pip uninstall -y cupy && pip install -e ".[cuda12]"'),
    (12040, ["cupy-cuda12x"], "ImportError: cannot import name 'core' (undefined symbol: cuGetProcAddress)",
     None, 'pip uninstall -y cupy-cuda12x && pip install -e ".[cuda12]"'),
    (12040, ["cupy-cuda12x"], "RuntimeError: cupy.is_available() is False", 12080,
     'pip uninstall -y cupy-cuda12x && pip install -e ".[cuda12]"'),
    (13000, ["cupy-cuda13x"], "RuntimeError: CuPy failed to load libnvrtc.so.13: OSError: libnvrtc.so.13: "
     "cannot open shared object file", 13000, 'pip install -e ".[cuda13]"'),
    (12040, ["cupy-cuda12x"], "CUBLASError: libcublas.so.12 not found", 12040,
     'pip install -e ".[cuda12]"'),
]


@pytest.mark.parametrize("driver, dists, error, runtime, command", ADVICE)
def test_install_advice(driver, dists, error, runtime, command):
    assert doctor.install_advice(driver, dists, error, runtime) == command


def test_install_advice_takes_the_probe_dict():
    assert doctor.install_advice(12040, {"cupy-cuda13x": "14.0.0"}) == \
        'pip uninstall -y cupy-cuda13x && pip install -e ".[cuda12]"'


def test_cuda_install_hint_names_a_command_for_this_machine(monkeypatch):
    monkeypatch.setattr(doctor, "probe_driver", lambda: doctor.Driver(None, None, "no libcuda"))
    assert doctor.cuda_install_hint() == ('pip install -e ".[cuda12]" for a CUDA 12 driver or pip install '
                                          '-e ".[cuda13]" for CUDA 13 (no NVIDIA driver was found on this machine)')
    monkeypatch.setattr(doctor, "probe_driver", lambda: doctor.Driver(13000, 1))
    monkeypatch.setattr(doctor, "probe_cupy_distributions", lambda: {})
    hint = doctor.cuda_install_hint()
    assert hint.startswith('pip install -e ".[cuda13]" ') and "CUDA 13.0" in hint and "\n" not in hint

    def broken():
        raise RuntimeError("boom")
    monkeypatch.setattr(doctor, "probe_driver", broken)
    assert ".[cuda12]" in doctor.cuda_install_hint() and ".[cuda13]" in doctor.cuda_install_hint()


def test_cuda_install_hint_on_this_machine_never_raises():
    hint = doctor.cuda_install_hint()
    assert "pip install" in hint and "\n" not in hint


# --- (c) simulated machines ----------------------------------------------------------------------
def _simulate(monkeypatch, driver, dists, cupy=None):
    monkeypatch.setattr(doctor, "probe_driver", lambda: driver)
    monkeypatch.setattr(doctor, "probe_cupy_distributions", lambda: dists)

    def import_cupy():
        if cupy is None:
            raise ModuleNotFoundError("No module named 'cupy'")
        return cupy
    monkeypatch.setattr(doctor, "import_cupy", import_cupy)
    out = io.StringIO()
    status = doctor.run(out)
    return status, out.getvalue().splitlines()


def test_driver_without_cupy_exits_1_with_the_install_command_last(monkeypatch):
    status, lines = _simulate(monkeypatch, doctor.Driver(12040, 1), {})
    assert status == 1
    assert lines[-1] == 'pip install -e ".[cuda12]"'
    assert re.match(r"status:\s+CuPy is not installed; the fix:$", lines[-2]), lines
    assert any(re.match(r"nvidia driver:\s+CUDA 12\.4, 1 GPU\(s\)$", line) for line in lines), lines


def test_no_driver_without_cupy_exits_0(monkeypatch):
    status, lines = _simulate(monkeypatch, doctor.Driver(None, None, "libcuda.so.1: not found"), {})
    assert status == 0 and "ok: CPU only" in lines[-1]


def test_driver_that_sees_no_gpu_is_a_cpu_machine(monkeypatch):
    status, lines = _simulate(monkeypatch, doctor.Driver(12040, 0, "cuInit fails"), {})
    assert status == 0 and "the NVIDIA driver sees no GPU" in lines[-1]


def test_conflicting_cupy_packages_exit_1(monkeypatch):
    status, lines = _simulate(monkeypatch, doctor.Driver(13000, 1),
                              {"cupy-cuda12x": "13.6.0", "cupy-cuda13x": "14.0.0"})
    assert status == 1
    assert lines[-1] == 'pip uninstall -y cupy-cuda12x cupy-cuda13x && pip install -e ".[cuda13]"'
    assert any(re.match(r"cupy packages:\s+cupy-cuda12x 13\.6\.0, cupy-cuda13x 14\.0\.0$", x) for x in lines)


class _FakeDevice:
    def __init__(self, index):
        self.index = index
        self.mem_info = (60 * 2**30, 80 * 2**30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _fake_cupy(exp=np.exp, available=True):
    """A CuPy stand-in on NumPy: the doctor's GPU branch, run on a CPU."""
    runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: 12080, driverGetVersion=lambda: 12040, getDeviceCount=lambda: 2,
        getDeviceProperties=lambda i: {"name": f"Fake GPU {i}".encode(), "major": 9, "minor": 0})
    return types.SimpleNamespace(
        __version__="14.0.0", __file__="/site/cupy/__init__.py", is_available=lambda: available,
        cuda=types.SimpleNamespace(runtime=runtime, Device=_FakeDevice),
        asarray=np.asarray, asnumpy=np.asarray, exp=exp)


def test_a_working_gpu_exits_0_and_names_each_gpu(monkeypatch):
    status, lines = _simulate(monkeypatch, doctor.Driver(12040, 2), {"cupy-cuda12x": "14.0.0"}, _fake_cupy())
    assert status == 0, lines
    text = "\n".join(lines)
    assert re.search(r"^cuda runtime:\s+12\.8$", text, re.M) and re.search(r"^gpus:\s+2$", text, re.M)
    assert re.search(r"^gpu 1:\s+Fake GPU 1, compute capability 9\.0, 80\.0 GiB total, 60\.0 GiB free$",
                     text, re.M), text
    assert re.search(r"^gpu 1 kernel:\s+ok \(max relative error \d\.\de-\d\d vs NumPy\)$", text, re.M), text
    assert "ok: CuPy ran the test kernel on 2 GPU(s)" in lines[-1]


def test_a_wrong_kernel_exits_1_with_the_reinstall(monkeypatch):
    fake = _fake_cupy(exp=lambda x: np.exp(x) * 1.01)
    status, lines = _simulate(monkeypatch, doctor.Driver(12040, 2), {"cupy-cuda12x": "14.0.0"}, fake)
    assert status == 1
    assert re.search(r"^gpu 0 kernel:\s+FAILED: RuntimeError: wrong results: relative error .* in elementwise$",
                     "\n".join(lines), re.M), lines
    assert lines[-1] == 'pip uninstall -y cupy-cuda12x && pip install -e ".[cuda12]"'


def test_a_nan_kernel_is_a_failure(monkeypatch):
    fake = _fake_cupy(exp=lambda x: np.full_like(np.exp(x), np.nan))
    status, lines = _simulate(monkeypatch, doctor.Driver(12040, 2), {"cupy-cuda12x": "14.0.0"}, fake)
    assert status == 1
    assert re.search(r"^gpu 0 kernel:\s+FAILED: .*relative error inf in elementwise$", "\n".join(lines), re.M)


def test_cupy_not_available_with_a_driver_exits_1(monkeypatch):
    fake = _fake_cupy(available=False)
    status, lines = _simulate(monkeypatch, doctor.Driver(13000, 1), {"cupy-cuda13x": "14.0.0"}, fake)
    assert status == 1 and "cupy.is_available() is False" in "\n".join(lines)
    assert lines[-1] == 'pip uninstall -y cupy-cuda13x && pip install -e ".[cuda13]"'


def test_a_probe_that_raises_is_one_line_not_a_traceback(monkeypatch):
    def broken():
        raise OSError("weird\nmultiline failure")
    monkeypatch.setattr(doctor, "probe_cupy_distributions", broken)
    monkeypatch.setattr(doctor, "probe_driver", lambda: doctor.Driver(None, None, "none"))
    out = io.StringIO()
    assert doctor.run(out) == 0
    assert re.search(r"^cupy packages:\s+error: OSError: weird$", out.getvalue(), re.M), out.getvalue()


# --- (d) a real GPU ------------------------------------------------------------------------------
@pytest.mark.gpu
def test_report_on_a_real_gpu():
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else name
    proc = _report()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert re.search(rf"^gpu 0:\s+{re.escape(name)}, compute capability", proc.stdout, re.M), proc.stdout
    assert re.search(r"^gpu 0 kernel:\s+ok \(max relative error", proc.stdout, re.M), proc.stdout
    assert "ok: CuPy ran the test kernel" in proc.stdout.splitlines()[-1]


def test_without_threadpoolctl_the_blas_line_comes_from_numpys_build(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)          # import fails
    monkeypatch.setattr(doctor, "probe_driver", lambda: doctor.Driver(None, None, "none"))
    out = io.StringIO()
    assert doctor.run(out) == 0
    assert re.search(r"^blas:\s+\S+ \S+ \(NumPy's build; pip install threadpoolctl", out.getvalue(), re.M), \
        out.getvalue()
