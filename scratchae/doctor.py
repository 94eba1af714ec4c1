"""``scratchae doctor``: what this machine has for scratchae, and the one command that fixes CuPy.

It checks, one fact a line: Python; scratchae; NumPy and the BLAS (and OpenMP) it loaded, via
threadpoolctl; scratchae's reference mode and thread count; array-api-compat; the CuPy
distributions installed (more than one is a conflict); the CUDA version of the NVIDIA driver,
read from ``libcuda`` with ctypes, so without CuPy; then CuPy itself: its CUDA runtime and
driver versions, each GPU (name, compute capability, memory), and a small matmul, sum and
elementwise kernel on each GPU, compared to NumPy on the host.

Exit status 0 when the machine is consistent (CPU only with no NVIDIA driver, or a GPU on which
the kernel ran), else 1 with the fix on the last line. Every probe reports its own error in
one line: the doctor never shows a traceback. ``install_advice`` is the pure decision table.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import re
import sys
import warnings
from typing import NamedTuple

WIDTH = 21          # "CUDA_VISIBLE_DEVICES:" is the longest name
_CUPY_NAME = re.compile(r"^cupy(-cuda\d+x?|-rocm(-\d+)+)?$")   # not cupy-wheel, cupy-xarray, ...
_TOOLKIT_LIB = re.compile(r"nvrtc|cublas|curand|cusolver|cusparse|cufft|nvjitlink|libcudart",
                          re.IGNORECASE)


class Driver(NamedTuple):
    version: int | None     # CUDA version the driver supports (12040 = 12.4); None: no driver
    gpus: int | None        # GPUs the driver sees; None: not known
    note: str = ""          # why there is no driver, or no GPU


def cuda_version(v: int | None) -> str:
    """``12040`` -> ``"12.4"`` (CUDA's 1000 * major + 10 * minor)."""
    return "none" if not v else f"{v // 1000}.{v % 1000 // 10}"


def _one_line(err: BaseException) -> str:
    first = next((s.strip() for s in str(err).splitlines() if s.strip()), "")
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    if err.__cause__ is not None and err.__cause__ is not err:
        text += f" ({_one_line(err.__cause__)})"
    return text[:300]


# --- probes (each may raise; run() reports the error in one line) ----------------------------
def probe_driver() -> Driver:
    """The NVIDIA driver's CUDA version and GPU count, from libcuda via ctypes (no CuPy)."""
    name = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as err:
        return Driver(None, None, f"{name}: {err}" if name not in str(err) else str(err))
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value == 0:
        return Driver(None, None, f"{name} loads but cuDriverGetVersion fails")
    status = lib.cuInit(0)
    if status != 0:
        return Driver(version.value, 0, f"cuInit fails with CUresult {status} (100: no GPU visible)")
    count = ctypes.c_int(0)
    lib.cuDeviceGetCount(ctypes.byref(count))
    return Driver(version.value, count.value, "")


def probe_cupy_distributions() -> dict[str, str]:
    """Installed CuPy distributions, name -> version (cupy, cupy-cuda12x, cupy-cuda13x, ...)."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
        if _CUPY_NAME.match(name):
            found.setdefault(name, dist.version)
    return dict(sorted(found.items()))


def import_cupy():
    """``import cupy`` (its own duplicate-install warning is silenced: the doctor reports it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import cupy
    return cupy


def run_kernel(cupy, index: int) -> str:
    """A 256x256 float32 matmul, a sum and an elementwise op on GPU ``index``, against NumPy."""
    import numpy
    rng = numpy.random.default_rng(0)
    a, b = (rng.standard_normal((256, 256), dtype=numpy.float32) for _ in range(2))
    with cupy.cuda.Device(index):
        da, db = cupy.asarray(a), cupy.asarray(b)
        got = [cupy.asnumpy(da @ db), cupy.asnumpy(da.sum()), cupy.asnumpy(cupy.exp(da) * 2 - db)]
    a64, b64 = a.astype(numpy.float64), b.astype(numpy.float64)
    want = [a64 @ b64, a64.sum(), numpy.exp(a64) * 2 - b64]
    errors = [float(numpy.max(numpy.abs(g - w)) / max(1.0, float(numpy.max(numpy.abs(w)))))
              for g, w in zip(got, want)]
    errors = [e if e == e else float("inf") for e in errors]        # NaN: as wrong as can be
    worst = max(errors)
    if worst > 1e-3:
        where = ("matmul", "sum", "elementwise")[errors.index(worst)]
        raise RuntimeError(f"wrong results: relative error {worst:.1e} in {where}")
    return f"ok (max relative error {worst:.1e} vs NumPy)"


# --- the decision table ---------------------------------------------------------------------
def _diagnose(driver_version, cupy_distributions, cupy_error=None, runtime_version=None):
    """(what is wrong, the fix) or None; the logic of :func:`install_advice`."""
    if not driver_version:
        return None
    major = driver_version // 1000
    if major < 12:
        return ("the NVIDIA driver is too old",
                f"update the NVIDIA driver: it supports CUDA {cuda_version(driver_version)}, and "
                "the CuPy wheels scratchae supports (cupy-cuda12x, cupy-cuda13x) need CUDA 12 or 13")
    extra = "cuda13" if major >= 13 else "cuda12"
    install = f'pip install -e ".[{extra}]"'
    names = sorted(set(cupy_distributions))
    fresh = f"pip uninstall -y {' '.join(names)} && {install}"
    if not names:
        return "CuPy is not installed", install
    if len(names) > 1:      # they share one cupy/ folder: removing all but one breaks that one
        return f"{len(names)} CuPy packages conflict ({', '.join(names)}): remove all, install one", fresh
    built = re.match(r"cupy-cuda(\d\d)", names[0])       # cupy-cuda12x, cupy-cuda118: 12, 11
    built_major = max(int(built.group(1)) if built else 0, (runtime_version or 0) // 1000)
    if built_major > major:
        return (f"{names[0]} is built for CUDA {built_major}, but the driver supports only "
                f"CUDA {cuda_version(driver_version)}", fresh)
    if cupy_error:
        if _TOOLKIT_LIB.search(cupy_error) and names[0] in ("cupy-cuda12x", "cupy-cuda13x"):
            # the extras pull CuPy's [ctk] (the CUDA libraries as wheels): installing the
            # extra again adds what is missing
            return f"CuPy cannot find a CUDA library: {cupy_error}", install
        return f"CuPy does not work: {cupy_error}", fresh
    return None


def install_advice(driver_version, cupy_distributions, cupy_error=None, runtime_version=None):
    """The ONE command that fixes the CuPy install, or None when nothing needs fixing.

    ``driver_version``: the driver's CUDA version (12040) or None (no driver: CPU only, fine);
    ``cupy_distributions``: installed CuPy distribution names; ``cupy_error``: why CuPy failed
    (import, ``is_available()``, the kernel), if it did; ``runtime_version``: CuPy's CUDA runtime.
    Below CUDA 12 the answer is a sentence (update the driver), not a command.
    """
    found = _diagnose(driver_version, cupy_distributions, cupy_error, runtime_version)
    return found[1] if found else None


def cuda_install_hint(error: str | None = None) -> str:
    """One line for --device cuda errors: the install command for this machine's driver.
    ``error``: why CuPy failed, if known. Never raises."""
    both = 'pip install -e ".[cuda12]" for a CUDA 12 driver or pip install -e ".[cuda13]" for CUDA 13'
    try:
        driver = probe_driver()
        if not driver.version:
            return f"{both} (no NVIDIA driver was found on this machine)"
        advice = install_advice(driver.version, probe_cupy_distributions(),
                                error or "CuPy is not usable", None)
        return f"{advice} (this machine's NVIDIA driver supports CUDA {cuda_version(driver.version)})"
    except Exception:
        return both


# --- the report -----------------------------------------------------------------------------
def run(out=None) -> int:
    """Print the report to ``out`` (default: stdout); return the exit status (0 ok, 1 fix)."""
    out = sys.stdout if out is None else out

    def fact(name, value):
        print(f"{name + ':':<{WIDTH}} {value}", file=out, flush=True)

    def probe(name, compute):
        try:
            fact(name, compute())
        except Exception as err:
            fact(name, f"error: {_one_line(err)}")

    import numpy
    import scratchae
    from scratchae import fast
    probe("python", lambda: f"{platform.python_version()} ({sys.executable})")
    probe("scratchae", lambda: f"{scratchae.__version__} ({os.path.dirname(scratchae.__file__)})")
    probe("numpy", lambda: numpy.__version__)
    try:
        for name, value in _threadpool_lines(numpy):
            fact(name, value)
    except Exception as err:
        fact("blas", f"error: {_one_line(err)}")
    probe("reference mode", lambda: "on" if fast.reference_enabled() else "off")
    probe("fast-path threads", lambda: f"{fast.num_threads()} (scratchae.fast.num_threads())")
    probe("array-api-compat", lambda: importlib.metadata.version("array-api-compat"))

    dists: dict = {}
    try:
        dists = probe_cupy_distributions()
        fact("cupy packages", ", ".join(f"{n} {v}" for n, v in dists.items()) or "none")
    except Exception as err:
        fact("cupy packages", f"error: {_one_line(err)}")
    try:
        driver = probe_driver()
    except Exception as err:
        driver = Driver(None, None, _one_line(err))
    if driver.version:
        gpus = "" if driver.gpus is None else f", {driver.gpus} GPU(s)"
        fact("nvidia driver", f"CUDA {cuda_version(driver.version)}{gpus} {driver.note}".rstrip())
    else:
        fact("nvidia driver", f"no NVIDIA driver found ({driver.note})")
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        fact("CUDA_VISIBLE_DEVICES", repr(os.environ["CUDA_VISIBLE_DEVICES"]))

    cupy_error, runtime, ran = None, None, 0
    try:
        cupy = import_cupy()
        fact("cupy", f"{cupy.__version__} ({os.path.dirname(cupy.__file__)})")
    except Exception as err:
        cupy, cupy_error = None, _one_line(err)
        missing = isinstance(err, ModuleNotFoundError) and not dists
        fact("cupy", "not installed" if missing else f"import fails: {cupy_error}")
    if cupy is not None:
        try:
            runtime = cupy.cuda.runtime.runtimeGetVersion()
            fact("cuda runtime", cuda_version(runtime))
            cupy_driver = cupy.cuda.runtime.driverGetVersion()
            fact("cuda driver (cupy)", cuda_version(cupy_driver))
            if not driver.version and cupy_driver:
                driver = Driver(cupy_driver, None, "(seen by CuPy)")
            if not cupy.is_available():
                raise RuntimeError("cupy.is_available() is False")
            count = cupy.cuda.runtime.getDeviceCount()
            fact("gpus", str(count))
        except Exception as err:
            cupy_error, count = _one_line(err), 0
            fact("cupy gpus", f"none usable: {cupy_error}")
        for i in range(count):
            probe(f"gpu {i}", lambda: _gpu_line(cupy, i))
            try:
                fact(f"gpu {i} kernel", run_kernel(cupy, i))
                ran += 1
            except Exception as err:
                cupy_error = cupy_error or _one_line(err)
                fact(f"gpu {i} kernel", f"FAILED: {_one_line(err)}")

    if not driver.version or driver.gpus == 0:
        why = "no NVIDIA driver found" if not driver.version else "the NVIDIA driver sees no GPU"
        fact("status", f"ok: CPU only ({why}); --device cpu is what this machine runs")
        return 0
    found = _diagnose(driver.version, dists, cupy_error or (None if ran else "it ran on no GPU"),
                      runtime)
    if found is None:
        fact("status", f"ok: CuPy ran the test kernel on {ran} GPU(s); --device cuda works")
        return 0
    problem, fix = found
    fact("status", f"{problem}; the fix:")
    print(fix, file=out, flush=True)
    return 1


def _threadpool_lines(numpy):
    """(name, value) per BLAS / OpenMP pool NumPy loaded, via threadpoolctl (optional)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return [("blas", f"{blas.get('name')} {blas.get('version')} (NumPy's build; "
                         "pip install threadpoolctl to see the loaded library and its threads)")]
    pools = threadpool_info()
    lines = [(p["user_api"], f"{p.get('internal_api')} {p.get('version')}, {p.get('num_threads')} "
              f"threads, {p.get('filepath')}") for p in pools if p.get("user_api") in ("blas", "openmp")]
    if not any(name == "blas" for name, _ in lines):
        lines.insert(0, ("blas", "none loaded (threadpoolctl sees no BLAS)"))
    if not any(name == "openmp" for name, _ in lines):
        lines.append(("openmp", "none loaded"))
    return lines


def _gpu_line(cupy, i: int) -> str:
    props = cupy.cuda.runtime.getDeviceProperties(i)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    device = cupy.cuda.Device(i)
    with device:
        free, total = device.mem_info
    return (f"{name}, compute capability {props['major']}.{props['minor']}, "
            f"{total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free")


if __name__ == "__main__":
    sys.exit(run())
