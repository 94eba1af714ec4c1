"""scratchae.data: IDX parsing, where datasets are looked for, checked downloads from a
loopback server, the bundled MNIST subset, preprocessing and batching.

Nothing here touches the internet: every download goes to a server on 127.0.0.1, and
HOME / $SCRATCHAE_DATA point into tmp_path.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import pathlib
import struct
import threading

import numpy as np
import pytest

import scratchae.backend as B
from scratchae import data as D
from scratchae.data import DataError

FIRST_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
FIRST_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
             np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


# --- helpers: a tiny IDX writer and tiny datasets -----------------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr)
    header = bytes([0, 0, IDX_CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: pathlib.Path, arr, gz=True) -> pathlib.Path:
    raw = idx_bytes(arr)
    # mtime=0: the same arrays give the same bytes (and so the same SHA-256)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def tiny(n_train=12, n_test=5, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test, dtype=np.uint8)}


def write_idx_dir(directory: pathlib.Path, arrays: dict, gz=True) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, fname in D.FILES.items():
        write_idx(directory / (fname if gz else fname[:-3]), arrays[key], gz=gz)
    return directory


def sha256s(directory: pathlib.Path) -> dict:
    return {f: hashlib.sha256((directory / f).read_bytes()).hexdigest() for f in D.FILES.values()}


def assert_same(ds, arrays):
    for k in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(ds, k)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[k])


def files_under(root: pathlib.Path) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME (so the cache is tmp_path/home/.cache/scratchae), no $SCRATCHAE_DATA."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    return h


# --- IDX parsing --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5), (0, 28, 28)])
def test_idx_round_trip(tmp_path, dtype, shape):
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    for gz in (True, False):
        back = D.read_idx(write_idx(tmp_path / f"a{gz}.idx", arr, gz=gz))
        assert back.dtype == np.dtype(dtype) and back.dtype.isnative
        assert back.shape == shape
        np.testing.assert_array_equal(back, arr)
        back[...] = 0  # a writable copy, not a view of the file's bytes


@pytest.mark.parametrize("mutate,msg", [
    (lambda b: b[:3], "shorter than the header"),
    (lambda b: b"\x01" + b[1:], "not an IDX file"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
    (lambda b: b[:3] + b"\x00" + b[4:], "0 dimensions"),
    (lambda b: b[:10], "truncated IDX header"),
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\x00", "trailing bytes"),
])
def test_malformed_idx_is_refused(tmp_path, mutate, msg):
    raw = mutate(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=msg) as err:
        D.read_idx(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_corrupted_gzip_is_refused(tmp_path):
    raw = bytearray(gzip.compress(idx_bytes(np.arange(300, dtype=np.uint8).reshape(3, 10, 10))))
    p = tmp_path / "x.gz"
    p.write_bytes(bytes(raw[:len(raw) // 2]))
    with pytest.raises(DataError, match="corrupted gzip"):
        D.read_idx(p)


# --- where datasets come from -------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False])
def test_load_from_idx_directory(home, tmp_path, gz):
    arrays = tiny()
    d = write_idx_dir(tmp_path / "idx", arrays, gz=gz)
    ds = D.load_dataset("mnist", data=d, download=False)
    assert_same(ds, arrays)
    assert ds.source == str(d) and ds.name == "mnist" and not ds.is_subset


def test_load_from_npz_file_and_directory(home, tmp_path):
    arrays = tiny()
    f = tmp_path / "whatever.npz"
    np.savez(f, **arrays)
    ds = D.load_dataset("mnist", data=f, download=False)
    assert_same(ds, arrays)
    assert ds.source == str(f)
    d = tmp_path / "dir"
    d.mkdir()
    np.savez(d / "fashion_mnist.npz", **arrays)
    ds = D.load_dataset("fashion-mnist", data=d, download=False)  # "-" is accepted too
    assert ds.name == "fashion_mnist" and ds.source == str(d / "fashion_mnist.npz")
    assert_same(ds, arrays)


def test_a_directory_can_hold_both_datasets(home, tmp_path):
    mn, fa = tiny(seed=1), tiny(n_train=4, seed=2)
    write_idx_dir(tmp_path / "all" / "mnist", mn)
    write_idx_dir(tmp_path / "all" / "fashion_mnist", fa)
    assert_same(D.load_dataset("mnist", data=tmp_path / "all", download=False), mn)
    assert_same(D.load_dataset("fashion_mnist", data=tmp_path / "all", download=False), fa)


def test_search_order_argument_then_env_then_cache(home, tmp_path, monkeypatch):
    arg, env, cache = tiny(n_train=3, seed=3), tiny(n_train=4, seed=4), tiny(n_train=5, seed=5)
    write_idx_dir(tmp_path / "arg", arg)
    np.savez(tmp_path / "env.npz", **env)
    write_idx_dir(home / ".cache" / "scratchae" / "mnist", cache)
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "env.npz"))

    assert_same(D.load_dataset("mnist", data=tmp_path / "arg", download=False), arg)
    assert_same(D.load_dataset("mnist", download=False), env)
    monkeypatch.delenv(D.ENV_VAR)
    ds = D.load_dataset("mnist", download=False)
    assert_same(ds, cache)
    assert ds.source == str(D.cache_dir("mnist"))
    assert D.cache_dir("mnist") == home / ".cache" / "scratchae" / "mnist"


def test_env_directory_without_the_dataset_is_passed_over(home, tmp_path, monkeypatch):
    cache = tiny(seed=6)
    write_idx_dir(home / ".cache" / "scratchae" / "fashion_mnist", cache)
    only_mnist = tmp_path / "envdir"
    only_mnist.mkdir()
    np.savez(only_mnist / "mnist.npz", **tiny(seed=7))
    monkeypatch.setenv(D.ENV_VAR, str(only_mnist))
    assert_same(D.load_dataset("fashion_mnist", download=False), cache)


def test_explicit_paths_that_do_not_hold_data_are_errors(home, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file"):
        D.load_dataset("mnist", data=tmp_path / "nope", download=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no mnist.npz and no four IDX files"):
        D.load_dataset("mnist", data=tmp_path / "empty", download=False)
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(DataError, match=r"\$SCRATCHAE_DATA=.*typo: no such file"):
        D.load_dataset("mnist", download=False)
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        D.load_dataset("cifar", download=False)


@pytest.mark.parametrize("change,msg", [
    (lambda a: a.pop("y_test"), "missing y_test"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32) / 255), "dtype float32, expected uint8"),
    (lambda a: a.update(x_train=a["x_train"].reshape(-1, 784)), r"shape \(12, 784\), expected \(N, 28, 28\)"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "to match x_train"),
    (lambda a: a.update(y_test=a["y_test"] + 10), "labels outside 0-9"),
])
def test_bad_npz_contents_are_refused(home, tmp_path, change, msg):
    arrays = tiny()
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=msg):
        D.load_dataset("mnist", data=tmp_path / "bad.npz", download=False)


def test_int64_labels_are_accepted_as_uint8(home, tmp_path):
    arrays = tiny()
    np.savez(tmp_path / "l.npz", **{**arrays, "y_train": arrays["y_train"].astype(np.int64)})
    ds = D.load_dataset("mnist", data=tmp_path / "l.npz", download=False)
    assert ds.y_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])


def test_npz_with_pickles_is_refused_without_unpickling(home, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arrays = tiny()
    np.savez(tmp_path / "evil.npz", **{**arrays, "y_train": np.array([Evil()] * 12, dtype=object)})
    with pytest.raises(DataError, match="without unpickling"):
        D.load_dataset("mnist", data=tmp_path / "evil.npz", download=False)
    assert not marker.exists()


def test_mnist_files_are_not_taken_for_fashion_mnist(home, tmp_path, monkeypatch):
    d = write_idx_dir(tmp_path / "idx", tiny())
    # pretend these tiny files are the canonical MNIST ones
    monkeypatch.setitem(D.CHECKSUMS, "mnist", sha256s(d))
    with pytest.raises(DataError, match="this is the MNIST file, but Fashion-MNIST was asked for"):
        D.load_dataset("fashion_mnist", data=d, download=False)
    assert D.load_dataset("mnist", data=d, download=False).name == "mnist"


# --- downloads from a loopback server -----------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):  # promises 1000 bytes, sends 10, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\x00" * 8)
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (root dir, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def dead_url():
    """A loopback URL nothing listens on (connection refused at once)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def test_download_fetches_and_verifies(server, tmp_path, capsys):
    root, url = server
    arrays = tiny()
    write_idx_dir(root / "mnist", arrays)
    sums = sha256s(root / "mnist")
    dest = tmp_path / "cache" / "mnist"
    got = D.download_dataset("mnist", dest, mirrors=[url + "missing/", url + "mnist/"],
                             checksums=sums, timeout=5)  # first mirror 404s: the next is used
    assert got == dest
    assert sorted(p.name for p in files_under(dest)) == sorted(D.FILES.values())
    assert sha256s(dest) == sums
    assert "downloaded MNIST" in capsys.readouterr().err
    assert_same(D.load_dataset("mnist", data=dest, download=False), arrays)
    # a second call finds the verified files in place and fetches nothing
    D.download_dataset("mnist", dest, mirrors=[url + "gone/"], checksums=sums, quiet=True)
    assert capsys.readouterr().err == ""


def test_corrupted_download_is_refused_and_not_kept(server, tmp_path):
    root, url = server
    d = write_idx_dir(root / "mnist", tiny())
    sums = sha256s(d)
    bad = "t10k-images-idx3-ubyte.gz"
    raw = bytearray((d / bad).read_bytes())
    raw[40] ^= 0x01  # one flipped bit on the server
    (d / bad).write_bytes(bytes(raw))
    actual = hashlib.sha256(bytes(raw)).hexdigest()

    dest = tmp_path / "cache" / "mnist"
    with pytest.raises(DataError) as err:
        D.download_dataset("mnist", dest, mirrors=[url + "mnist/"], checksums=sums, timeout=5)
    msg = str(err.value)
    assert bad in msg and sums[bad] in msg and actual in msg and "\n" not in msg
    assert files_under(tmp_path / "cache") == []  # nothing kept: not the bad file, not the good ones
    assert not (tmp_path / "cache").exists()     # and the directories it made are gone again


def test_cut_off_transfer_moves_on_to_the_next_mirror(server, tmp_path):
    root, url = server
    arrays = tiny()
    sums = sha256s(write_idx_dir(root / "mnist", arrays))
    dest = tmp_path / "c"
    with pytest.raises(DataError, match="could not download train-images.*cut off after 10 of 1000"):
        D.download_dataset("mnist", dest, mirrors=[url + "short/"], checksums=sums, timeout=5)
    assert not dest.exists()
    D.download_dataset("mnist", dest, mirrors=[url + "short/", url + "mnist/"], checksums=sums,
                       timeout=5, quiet=True)
    assert_same(D.load_dataset("mnist", data=dest, download=False), arrays)


def test_download_needs_a_checksum_for_every_file(tmp_path):
    with pytest.raises(DataError, match="no SHA-256 given"):
        D.download_dataset("mnist", tmp_path, mirrors=["http://127.0.0.1:1/"], checksums={})


def test_load_dataset_downloads_into_the_cache(home, server, monkeypatch, capsys, dead_url):
    root, url = server
    arrays = tiny(n_train=9)
    write_idx_dir(root / "fm", arrays)
    monkeypatch.setitem(D.MIRRORS, "fashion_mnist", (dead_url, url + "fm/"))
    monkeypatch.setitem(D.CHECKSUMS, "fashion_mnist", sha256s(root / "fm"))
    ds = D.load_dataset("fashion_mnist")
    assert_same(ds, arrays)
    assert ds.source == str(home / ".cache" / "scratchae" / "fashion_mnist")
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setitem(D.MIRRORS, "fashion_mnist", (dead_url,))  # now served from the cache
    assert_same(D.load_dataset("fashion_mnist", quiet=True), arrays)
    assert capsys.readouterr().err == ""


def test_failed_download_falls_back_to_the_subset(home, server, monkeypatch, capsys):
    root, url = server
    d = write_idx_dir(root / "mnist", tiny())
    sums = sha256s(d)
    sums["train-labels-idx1-ubyte.gz"] = "0" * 64  # the server's file will not match
    monkeypatch.setitem(D.MIRRORS, "mnist", (url + "mnist/",))
    monkeypatch.setitem(D.CHECKSUMS, "mnist", sums)
    ds = D.load_dataset("mnist")
    assert ds.is_subset
    err = capsys.readouterr().err
    # one line, what is used and how to get the full data, and no word that reads as an error
    assert err.count("\n") == 1 and "bundled MNIST subset" in err and "--data" in err
    assert "failed" not in err.replace(str(home), "HOME").lower()
    assert files_under(home) == []


# --- the bundled subset -------------------------------------------------------------
def test_fallback_to_the_bundled_subset_says_so_once(home, capsys):
    ds = D.load_dataset("mnist", download=False)
    assert ds.source == "bundled subset" and ds.is_subset
    assert ds.x_train.shape == (5000, 28, 28) and ds.x_test.shape == (1000, 28, 28)
    assert ds.y_train.shape == (5000,) and ds.y_test.shape == (1000,)
    assert all(a.dtype == np.uint8 for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    assert ds.y_train[:10].tolist() == FIRST_TRAIN_LABELS
    assert ds.y_test[:10].tolist() == FIRST_TEST_LABELS
    assert set(np.unique(ds.y_train).tolist()) == set(range(10))
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert "5000 train / 1000 test" in lines[0]
    assert "--data mnist.npz" in lines[0] and "$SCRATCHAE_DATA" in lines[0]
    D.load_dataset("mnist", download=False, quiet=True)
    assert capsys.readouterr().err == ""


def test_the_subset_is_the_start_of_full_mnist(home, mnist_path):  # skipped without ../shared
    sub = D.load_dataset("mnist", download=False, quiet=True)
    assert sub.is_subset
    full = D.load_dataset("mnist", data=mnist_path, download=False)
    np.testing.assert_array_equal(sub.x_train, full.x_train[:5000])
    np.testing.assert_array_equal(sub.y_train, full.y_train[:5000])
    np.testing.assert_array_equal(sub.x_test, full.x_test[:1000])
    np.testing.assert_array_equal(sub.y_test, full.y_test[:1000])


def test_the_subset_file_is_small():
    import importlib.resources
    res = importlib.resources.files("scratchae").joinpath(*D.SUBSET_RESOURCE)
    assert res.is_file()
    assert len(res.read_bytes()) < 2_000_000


def test_fashion_mnist_has_no_fallback(home, capsys):
    with pytest.raises(DataError) as err:
        D.load_dataset("fashion_mnist", download=False)
    msg = str(err.value)
    assert "Fashion-MNIST not found" in msg and "--data PATH" in msg and "$SCRATCHAE_DATA" in msg
    assert "\n" not in msg


# --- preprocessing ------------------------------------------------------------------
def test_preprocess_none_scales_to_unit_interval():
    x = np.resize(np.arange(256, dtype=np.uint8), (1, 28, 28))  # every value 0..255
    x = np.concatenate([x, x[:, ::-1]])
    out = D.preprocess(x)
    assert type(out) is np.ndarray and out.dtype == np.float32 and out.shape == (2, 784)
    np.testing.assert_allclose(out, x.reshape(2, -1) / 255.0, rtol=1e-7)
    assert out.min() == 0.0 and out.max() == 1.0
    out64 = D.preprocess(x.reshape(2, 784), dtype="float64")
    assert out64.dtype == np.float64
    np.testing.assert_array_equal(out64, x.reshape(2, -1) / 255.0)


def test_preprocess_fixed_thresholds_at_half():
    x = np.zeros((3, 28, 28), np.uint8)
    x[0, 0, :4] = [127, 128, 0, 255]
    out = D.preprocess(x, "fixed")
    assert out[0, :4].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert set(np.unique(out).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(out, D.preprocess(x, "fixed"))


def test_preprocess_dynamic_draws_bernoulli_per_call():
    x = np.full((200, 28, 28), 64, np.uint8)   # p = 64/255 ~ 0.251
    x[:, 0, 0], x[:, 0, 1] = 0, 255
    with pytest.raises(ValueError, match="needs rng"):
        D.preprocess(x, "dynamic")
    a = D.preprocess(x, "dynamic", rng=np.random.default_rng(5))
    b = D.preprocess(x, "dynamic", rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)                    # same seed, same draw
    rng = np.random.default_rng(5)
    c, d = D.preprocess(x, "dynamic", rng=rng), D.preprocess(x, "dynamic", rng=rng)
    assert not np.array_equal(c, d)                        # a fresh draw every call
    assert set(np.unique(a).tolist()) == {0.0, 1.0} and a.dtype == np.float32
    assert (a[:, 0] == 0).all() and (a[:, 1] == 1).all()   # p = 0 and p = 1 are certain
    assert abs(a[:, 2:].mean() - 64 / 255) < 0.01
    # a scratchae Generator works too (its host-side NumPy stream)
    e = D.preprocess(x, "dynamic", rng=B.Generator(3))
    assert e.shape == (200, 784)


def test_preprocess_refuses_bad_input():
    x = np.zeros((2, 28, 28), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        D.preprocess(x.astype(np.float32))
    with pytest.raises(ValueError, match="binarize must be"):
        D.preprocess(x, "otsu")
    with pytest.raises(TypeError, match="float type"):
        D.preprocess(x, dtype="int32")
    with pytest.raises(TypeError, match="numpy Generator"):
        D.preprocess(x, "dynamic", rng=0)


# --- batching -----------------------------------------------------------------------
def test_batches_in_order_without_rng():
    got = list(D.batches(10, 4))
    assert [b.tolist() for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for b in D.batches(10, 4, drop_last=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(D.batches(0, 4)) == []
    assert [len(b) for b in D.batches(8, 4, drop_last=True)] == [4, 4]


def test_batches_shuffle_deterministically_without_global_rng():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = [b.tolist() for b in D.batches(103, 10, rng=np.random.default_rng(7))]
    b = [b.tolist() for b in D.batches(103, 10, rng=np.random.default_rng(7))]
    c = [b.tolist() for b in D.batches(103, 10, rng=np.random.default_rng(8))]
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(103))
    assert [len(x) for x in a] == [10] * 10 + [3]
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global RNG untouched
    # one generator, two epochs: two different orders
    rng = np.random.default_rng(7)
    e1, e2 = [np.concatenate(list(D.batches(50, 8, rng=rng))) for _ in range(2)]
    assert not np.array_equal(e1, e2)
    # a scratchae Generator draws the same permutation as its NumPy stream would
    s = np.concatenate(list(D.batches(20, 6, rng=B.Generator(4))))
    assert sorted(s.tolist()) == list(range(20))


def test_batches_refuse_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        D.batches(10, 0)
    with pytest.raises(ValueError, match="n must be"):
        D.batches(-1, 2)
    with pytest.raises(TypeError, match="ints"):
        D.batches(10.0, 2)
    with pytest.raises(TypeError, match="default_rng"):
        D.batches(10, 2, rng=42)
