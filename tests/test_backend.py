"""Backends: device names, the seeded Generator, host transfer, lazy imports."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scratchae import backend as B

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --- resolve ---------------------------------------------------------------------------------

def test_resolve_names():
    cpu = B.resolve("cpu")
    assert cpu.name == "cpu" and cpu.device == "cpu" and str(cpu) == "cpu"
    assert B.resolve(" CPU ") == cpu
    assert B.resolve(cpu) is cpu
    d1 = B.resolve("array_api_strict:device1")
    assert d1.name == "array_api_strict:device1"
    import array_api_strict as xps
    assert d1.xp is xps and d1.device == xps.Device("device1")
    strict = B.resolve("array_api_strict")
    assert strict.name == "array_api_strict:CPU_DEVICE" and strict.device == xps.Device("CPU_DEVICE")
    assert B.resolve("array_api_strict:CPU_DEVICE") == strict


@pytest.mark.gpu
def test_resolve_cuda_names_every_gpu():
    """The CuPy branch of resolve, against its twin (the strict branch above)."""
    import cupy
    import array_api_compat.cupy as ccp
    count = cupy.cuda.runtime.getDeviceCount()
    assert B.resolve("cuda") == B.resolve("cuda:0") and B.resolve("cuda").name == "cuda:0"
    last = B.resolve(f"cuda:{count - 1}")
    assert last.xp is ccp and last.device.id == count - 1
    for bad in (count, -1):
        with pytest.raises(B.DeviceError, match=f"has {count} GPU"):
            B.resolve(f"cuda:{bad}")
    assert len({B.resolve("cuda"), B.resolve("cuda:0"), last}) == (1 if count == 1 else 2)   # hashable


@pytest.mark.gpu
def test_synchronize_waits_for_queued_gpu_work():
    """CuPy's synchronize against its twin, the no-op of synchronous NumPy."""
    import cupy
    be = B.resolve("cuda")
    a = be.asarray(np.ones((2048, 2048)), "float32")
    for _ in range(5):
        a = a @ a / 2048.0
    B.synchronize(be)
    assert cupy.cuda.get_current_stream().done
    np.testing.assert_allclose(B.to_numpy(a), np.ones((2048, 2048)), rtol=1e-5)
    B.synchronize("cpu")          # the twin: nothing to wait for, never raises


@pytest.mark.parametrize("name", ["cpu", "array_api_strict", "array_api_strict:device1",
                                  pytest.param("cuda", marks=pytest.mark.gpu)])
def test_resolve_an_array_gives_its_backend(name):
    be = B.resolve(name)
    assert hash(be) == hash(B.resolve(name)) and {be: 1}[B.resolve(name)] == 1
    a = be.zeros((2, 3))
    assert B.resolve(a) == be
    assert B.device_of(a) == be.device


@pytest.mark.parametrize("bad", ["tpu", "gpu0", "", "numpy"])
def test_bad_names_raise_device_error(bad):
    with pytest.raises(B.DeviceError, match=r"unknown device .*use 'cpu', 'cuda', 'cuda:N'"):
        B.resolve(bad)


def test_bad_cuda_index_is_a_device_error():
    with pytest.raises(B.DeviceError, match="cuda:N"):
        B.resolve("cuda:x")


def test_bad_strict_device_is_a_device_error():
    with pytest.raises(B.DeviceError, match="device1"):
        B.resolve("array_api_strict:device7")


def _cupy_importable():
    try:
        import cupy  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.skipif(B.cuda_available(), reason="a GPU is present: 'cuda' resolves")
def test_cuda_without_cupy_or_gpu_says_what_to_do():
    with pytest.raises(B.DeviceError) as err:
        B.resolve("cuda")
    msg = str(err.value)
    if _cupy_importable():
        assert "no CUDA GPU is visible" in msg and "--device cpu" in msg
    else:
        assert "pip install" in msg and ".[cuda1" in msg and "CuPy" in msg
    assert "scratchae doctor" in msg        # the first thing a --device cuda error points to
    assert "\n" not in msg
    assert not B.cuda_available()          # never raises


# --- Generator -------------------------------------------------------------------------------

def test_same_seed_same_numbers(device):
    a, b = B.Generator(42, device=device), B.Generator(42, device=device)
    for draw in (lambda g: g.normal((3, 4), "float64"), lambda g: g.uniform((5,), -2.0, 3.0, "float64"),
                 lambda g: g.bernoulli((7,), 0.3, "float64")):
        np.testing.assert_array_equal(B.to_numpy(draw(a)), B.to_numpy(draw(b)))
    c = B.Generator(43, device=device)
    assert not np.array_equal(B.to_numpy(c.normal((3, 4), "float64")),
                              B.to_numpy(B.Generator(42, device=device).normal((3, 4), "float64")))


@pytest.mark.parametrize("seed", [None, 1.5, "3", np.float64(2.0)])
def test_generator_needs_an_explicit_integer_seed(seed):
    with pytest.raises(TypeError, match="explicit integer seed"):
        B.Generator(seed)


def test_numpy_integer_seed_is_accepted():
    assert B.Generator(np.int64(5)).seed == 5


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_draws_land_on_the_requested_device_and_dtype(device, dtype):
    g = B.Generator(0, device=device)
    for a in (g.normal((2, 3), dtype), g.normal((2, 3), dtype, mean=1.0, std=2.0),
              g.uniform((4,), dtype=dtype), g.uniform((4,), -1.0, 1.0, dtype),
              g.bernoulli((2, 2), 0.5, dtype)):
        assert B.device_of(a) == device.device
        assert B.dtype_name(a.dtype) == dtype
        assert B.resolve(a) == device
    ints = g.integers(0, 10, (5,))
    assert B.device_of(ints) == device.device and B.dtype_name(ints.dtype) == "int64"
    assert np.all((B.to_numpy(ints) >= 0) & (B.to_numpy(ints) < 10))
    perm = g.permutation(6)
    assert isinstance(perm, np.ndarray) and sorted(perm) == list(range(6))


def test_uniform_bounds_and_normal_moments(device):
    g = B.Generator(1, device=device)
    u = B.to_numpy(g.uniform((20000,), -2.0, 3.0, "float64"))
    assert u.min() >= -2.0 and u.max() < 3.0
    z = B.to_numpy(g.normal((20000,), "float64", mean=1.0, std=2.0))
    # standard errors: mean 2/sqrt(2e4) ~ 0.014, std ~ 2/sqrt(4e4) = 0.01; allow ~5 of them
    assert abs(z.mean() - 1.0) < 0.07 and abs(z.std() - 2.0) < 0.05


def test_bernoulli_mean(device):
    g = B.Generator(2, device=device)
    p, n = 0.3, 100_000
    m = B.to_numpy(g.bernoulli((n,), p, "float32"))
    assert set(np.unique(m)) <= {0.0, 1.0}
    # standard error sqrt(p(1-p)/n) = 0.00145; tolerance 0.01 is ~7 standard errors
    assert abs(m.mean() - p) < 0.01
    assert B.to_numpy(g.bernoulli((100,), 0.0, "float64")).sum() == 0
    assert B.to_numpy(g.bernoulli((100,), 1.0, "float64")).sum() == 100


@pytest.mark.parametrize("strict", ["array_api_strict", "array_api_strict:device1",
                                    pytest.param("cuda", marks=pytest.mark.gpu)])
def test_every_device_draws_the_cpu_numbers(strict):
    """One host stream for every device: the numbers are the CPU's, bit for bit."""
    a, b = B.Generator(7, device="cpu"), B.Generator(7, device=strict)
    for name, draw in [("normal", lambda g: g.normal((3, 5), "float64", mean=0.5, std=3.0)),
                       ("normal32", lambda g: g.normal((4,), "float32")),
                       ("uniform", lambda g: g.uniform((6,), 1.0, 2.0, "float64")),
                       ("bernoulli", lambda g: g.bernoulli((10,), 0.4, "float32")),
                       ("integers", lambda g: g.integers(-3, 3, (8,))),
                       ("permutation", lambda g: g.permutation(9))]:
        np.testing.assert_array_equal(B.to_numpy(draw(a)), B.to_numpy(draw(b)), err_msg=name)


def test_state_and_set_state_resume_exactly(device):
    g = B.Generator(11, device=device)
    g.normal((5,), "float64")
    saved = g.state()
    first = B.to_numpy(g.normal((4, 4), "float64")), B.to_numpy(g.bernoulli((9,), 0.5, "float64"))
    g.normal((100,), "float64")                     # the stream moves on
    g.set_state(saved)
    again = B.to_numpy(g.normal((4, 4), "float64")), B.to_numpy(g.bernoulli((9,), 0.5, "float64"))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # a fresh generator given the state continues the same stream
    h = B.Generator(999, device=device)
    h.set_state(saved)
    np.testing.assert_array_equal(B.to_numpy(h.normal((4, 4), "float64")), first[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_large_draw_is_copied_in_chunks_with_the_numbers_of_one_draw(monkeypatch, device, dtype):
    whole = B.Generator(5, device="cpu")
    chunked = B.Generator(5, device=device)
    monkeypatch.setattr(chunked, "CHUNK", 7)       # 3 x 11 = 33 entries: 5 chunks, the last short
    B.TRANSFERS.reset()
    for draw in (lambda g: g.normal((3, 11), dtype, mean=1.0, std=2.0),
                 lambda g: g.uniform((3, 11), -1.0, 2.0, dtype),
                 lambda g: g.bernoulli((3, 11), 0.3, dtype), lambda g: g.integers(0, 9, (33,))):
        a, b = draw(whole), draw(chunked)
        assert tuple(b.shape) == tuple(a.shape) and B.device_of(b) == device.device
        np.testing.assert_array_equal(B.to_numpy(a), B.to_numpy(b))
    if not B.is_numpy(b):
        assert B.TRANSFERS.to_device_copies == 4 * 5          # chunk by chunk


@pytest.mark.parametrize("name", ["array_api_strict:device1", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_generator_state_moves_between_devices(name):
    """A state saved on the CPU continues the same stream on another device (checkpoints move)."""
    cpu = B.Generator(3, device="cpu")
    cpu.normal((10,), "float64")
    state = cpu.state()
    assert json.loads(json.dumps(state)) == state          # plain JSON, whatever the device
    expected = B.to_numpy(cpu.normal((4,), "float32"))
    other = B.Generator(0, device=name)
    other.set_state(state)
    np.testing.assert_array_equal(B.to_numpy(other.normal((4,), "float32")), expected)
    back = B.Generator(1, device="cpu")
    back.set_state(other.state())                           # and back again
    np.testing.assert_array_equal(B.to_numpy(back.normal((3,), "float64")),
                                  B.to_numpy(cpu.normal((3,), "float64")))


def test_transfers_count_the_bytes_each_draw_moves():
    """float32 noise moves 4 bytes an entry, a mask 1 byte (cast on the device), indices 8."""
    g = B.Generator(0, device="array_api_strict:device1")
    for draw, nbytes in ((lambda: g.normal((128, 20), "float32"), 128 * 20 * 4),
                         (lambda: g.normal((128, 20), "float64"), 128 * 20 * 8),
                         (lambda: g.bernoulli((128, 784), 0.5, "float32"), 128 * 784),
                         (lambda: g.integers(0, 10, (100,)), 100 * 8)):
        B.TRANSFERS.reset()
        draw()
        assert B.TRANSFERS.snapshot() == {"to_device_bytes": nbytes, "to_device_copies": 1,
                                          "to_host_bytes": 0, "to_host_copies": 0}
    B.TRANSFERS.reset()
    B.Generator(0, device="cpu").normal((128, 20))
    assert B.TRANSFERS.to_device_copies == 0                # NumPy moves nothing


def test_context_is_a_no_op_off_cuda(device):
    with device.context():
        a = device.zeros((2,), "float32")
    assert B.device_of(a) == device.device


@pytest.mark.gpu
def test_cuda_context_makes_the_gpu_current_and_arrays_land_there():
    import cupy
    last = cupy.cuda.runtime.getDeviceCount() - 1
    be = B.resolve(f"cuda:{last}")
    with be.context():
        assert cupy.cuda.Device().id == last
    for a in (be.asarray(np.ones(3), "float32"), be.zeros((3,)), B.Generator(0, be).normal((3,)),
              B.Generator(0, be).bernoulli((3,), 0.5)):
        assert a.device.id == last


# --- host transfer ---------------------------------------------------------------------------

def test_to_numpy_from_each_backend(device):
    host = np.arange(6, dtype="float64").reshape(2, 3) / 7
    a = device.asarray(host, "float64")
    out = B.to_numpy(a)
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, host)
    back = B.from_numpy(out, device)
    assert B.device_of(back) == device.device
    assert B.to_scalar(device.asarray(2.5, "float64")) == 2.5


def test_to_numpy_of_scalars_and_numpy_is_a_no_op():
    a = np.ones(3)
    assert B.to_numpy(a) is a
    assert B.to_numpy(1.5) == np.asarray(1.5) and B.to_numpy(np.float32(2)).dtype == np.float32


def test_dtype_name_for_every_namespace(device):
    for dt in ("float32", "float64", "int64"):
        assert B.dtype_name(device.zeros((1,), dt).dtype) == dt


# --- lazy imports ----------------------------------------------------------------------------

def test_import_scratchae_imports_no_optional_dependency():
    code = ("import sys, scratchae\n"
            "bad = [m for m in ('cupy', 'matplotlib', 'hypothesis') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"import scratchae imported {out.stdout.strip()}"
