"""scratchae.checkpoint: round trips, atomic writes, and every refusal (never unpickling)."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import scratchae.backend as B
from scratchae import checkpoint as C
from scratchae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def sample_arrays(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "model/encoder.0.W": rng.standard_normal((5, 3)).astype(np.float32),
        "model/encoder.0.b": rng.standard_normal(3),                         # float64
        "model/decoder.layers.2.W": np.asfortranarray(rng.standard_normal((3, 4))),
        "optim/state/encoder.0.W/m": rng.standard_normal((5, 3))[:, ::2],   # not contiguous
        "counts": rng.integers(0, 100, 7),                                   # int64
        "mask": rng.random(6) > 0.5,                                         # bool
        "pixels": rng.integers(0, 256, (2, 2), dtype=np.uint8),
        "scalar": np.float64(3.25),                                          # 0-d
        "empty": np.zeros((0, 4), np.float32),
        "big-endian": np.arange(4, dtype=">i4"),
        # keys that would clash inside np.savez / NpzFile
        "file": np.arange(3), "allow_pickle": np.ones(2),
        "w": np.array([1.0]), "w.npy": np.array([2.0]),
        "modèle/Ω": np.array([7], np.int16),
    }


META = {"epoch": 3, "lr": 1e-3, "model": {"type": "VAE", "sizes": [784, 256, 20]},
        "note": "ünïcödé", "best": None, "loss": float("nan")}


def assert_arrays_equal(got: dict, want: dict):
    assert set(got) == set(want)
    for k, v in want.items():
        v = np.asarray(v)
        assert type(got[k]) is np.ndarray, k
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def listing(directory) -> list:
    return sorted(os.listdir(directory))


def raw_npz(path, meta=None, **arrays):
    """An .npz written by np.savez itself, with an optional hand-made __meta__."""
    if meta is not None:
        text = meta if isinstance(meta, (bytes, str)) else json.dumps(meta)
        raw = text.encode() if isinstance(text, str) else text
        arrays["__meta__"] = np.frombuffer(raw, np.uint8)
    np.savez(path, **arrays)
    return path


# --- round trips --------------------------------------------------------------------
def test_round_trip(tmp_path):
    arrays = sample_arrays()
    p = tmp_path / "ckpt.npz"
    save_checkpoint(p, arrays, META)
    got, meta = load_checkpoint(p)
    assert_arrays_equal(got, arrays)
    assert meta["format"] == "scratchae-checkpoint" and meta["format_version"] == 1
    assert {k: v for k, v in meta.items() if k not in ("format", "format_version", "loss")} == \
        {k: v for k, v in META.items() if k != "loss"}
    assert np.isnan(meta["loss"])
    assert listing(tmp_path) == ["ckpt.npz"]


def test_the_file_is_a_plain_npz(tmp_path):
    p = tmp_path / "ckpt.npz"
    save_checkpoint(p, {"model/a.W": np.eye(2)}, {"epoch": 1})
    with np.load(p, allow_pickle=False) as f:
        assert sorted(f.files) == ["__meta__", "model/a.W"]
        assert f["__meta__"].dtype == np.uint8
        meta = json.loads(f["__meta__"].tobytes().decode("utf-8"))
    assert meta == {"epoch": 1, "format": "scratchae-checkpoint", "format_version": 1}


def test_path_is_used_as_given_and_bytes_are_reproducible(tmp_path):
    a, b = tmp_path / "one.ckpt", tmp_path / "two.ckpt"
    save_checkpoint(a, sample_arrays(), META)
    save_checkpoint(str(b), sample_arrays(), META)
    assert listing(tmp_path) == ["one.ckpt", "two.ckpt"]  # no ".npz" appended
    assert a.read_bytes() == b.read_bytes()


def test_meta_round_trip_of_numpy_scalars_and_loaded_meta(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {}, {"lr": np.float32(0.5), "step": np.int64(7), "ok": np.bool_(True)})
    arrays, meta = load_checkpoint(p)
    assert arrays == {} and meta["lr"] == 0.5 and meta["step"] == 7 and meta["ok"] is True
    save_checkpoint(p, arrays, meta)  # what was loaded can be saved again as it is
    assert load_checkpoint(p)[1] == meta


@pytest.mark.parametrize("name", ["array_api_strict:device1", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_device_arrays_are_copied_to_the_host(tmp_path, name):
    dev = B.resolve(name)
    x = dev.asarray(np.arange(6.0).reshape(2, 3), "float32")
    save_checkpoint(tmp_path / "c.npz", {"x": x}, {})
    got, _ = load_checkpoint(tmp_path / "c.npz")
    assert got["x"].dtype == np.float32
    np.testing.assert_array_equal(got["x"], np.arange(6.0).reshape(2, 3))


def test_overwrite_keeps_file_mode(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"a": np.ones(1)}, {})
    os.chmod(p, 0o640)
    save_checkpoint(p, {"a": np.zeros(1)}, {})
    assert os.stat(p).st_mode & 0o777 == 0o640
    assert load_checkpoint(p)[0]["a"][0] == 0.0


# --- refusals at save ---------------------------------------------------------------
@pytest.mark.parametrize("arrays,meta,msg", [
    ({"a": np.array([{"x": 1}], dtype=object)}, {}, "Python objects"),
    ({"a": np.array([(1, None)], dtype=[("i", "i4"), ("o", "O")])}, {}, "Python objects"),
    ({"__meta__": np.ones(1)}, {}, "reserved for the metadata"),
    ({3: np.ones(1)}, {}, "non-empty strings"),
    ({"": np.ones(1)}, {}, "non-empty strings"),
    ({"a": np.ones(1)}, {"s": {1, 2}}, "not JSON-serialisable"),
    ({"a": np.ones(1)}, {"format": "pytorch"}, "reserved for 'scratchae-checkpoint'"),
    ({"a": np.ones(1)}, [1, 2], "meta must be a dict"),
    ([np.ones(1)], {}, "arrays must be a dict"),
])
def test_save_refuses(tmp_path, arrays, meta, msg):
    p = tmp_path / "c.npz"
    with pytest.raises(CheckpointError, match=msg):
        save_checkpoint(p, arrays, meta)
    assert listing(tmp_path) == []  # nothing written, no temp file left
    assert issubclass(CheckpointError, ValueError)


# --- atomicity ----------------------------------------------------------------------
def _old_checkpoint(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.ones(3)}, {"epoch": 1})
    return p, p.read_bytes()


def _assert_old_survives(tmp_path, p, old_bytes):
    assert listing(tmp_path) == ["c.npz"]  # no temp files remain
    assert p.read_bytes() == old_bytes
    arrays, meta = load_checkpoint(p)
    assert meta["epoch"] == 1
    np.testing.assert_array_equal(arrays["w"], np.ones(3))


def test_failure_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    p, old = _old_checkpoint(tmp_path)
    real = C._npformat.write_array
    calls = []

    def disk_full(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first array went in whole; the second half-way
            fp.write(b"\x93NUMPY\x01\x00 half an array")
            raise OSError(28, "No space left on device")
        return real(fp, array, *args, **kwargs)

    monkeypatch.setattr(C._npformat, "write_array", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(p, {"w": np.zeros(3), "v": np.zeros(1000)}, {"epoch": 2})
    assert len(calls) == 2
    _assert_old_survives(tmp_path, p, old)


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_failure_at_fsync_or_rename_leaves_the_old_checkpoint(tmp_path, monkeypatch, where):
    p, old = _old_checkpoint(tmp_path)

    def boom(*args, **kwargs):
        raise OSError(5, f"Input/output error in {where}")

    monkeypatch.setattr(C.os, where, boom)
    with pytest.raises(OSError, match=where):
        save_checkpoint(p, {"w": np.zeros(3)}, {"epoch": 2})
    monkeypatch.undo()
    _assert_old_survives(tmp_path, p, old)


def test_interrupt_mid_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    p, old = _old_checkpoint(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(C._npformat, "write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(p, {"w": np.zeros(3)}, {"epoch": 2})
    _assert_old_survives(tmp_path, p, old)


# --- refusals at load ---------------------------------------------------------------
def _refused(path, msg):
    with pytest.raises(CheckpointError, match=msg) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)  # one clear line
    return str(err.value)


def test_refuses_files_that_are_not_npz(tmp_path):
    (tmp_path / "t.npz").write_text("epoch 3, weights elsewhere\n")
    assert str(tmp_path / "t.npz") in _refused(tmp_path / "t.npz", r"not a zip/\.npz file")
    (tmp_path / "e.npz").write_bytes(b"")
    _refused(tmp_path / "e.npz", "empty file")
    np.save(tmp_path / "a.npy", np.ones(3))
    _refused(tmp_path / "a.npy", r"single \.npy array")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_refuses_truncated_and_corrupted_files(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.arange(2000.0)}, {"epoch": 1})
    raw = p.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 30):
        (tmp_path / "cut.npz").write_bytes(raw[:cut])
        _refused(tmp_path / "cut.npz", "truncated or corrupted")
    flipped = bytearray(raw)
    flipped[len(raw) // 3] ^= 0x10  # inside the array data
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    _refused(tmp_path / "flip.npz", "corrupted")
    header = bytearray(raw)
    i = raw.index(b"descr")
    header[i + 10] ^= 0x01  # inside the .npy header of the first member
    (tmp_path / "hdr.npz").write_bytes(bytes(header))
    _refused(tmp_path / "hdr.npz", "corrupted")


def test_refuses_npz_without_meta(tmp_path):
    msg = _refused(raw_npz(tmp_path / "plain.npz", w=np.ones(2)), "no __meta__")
    assert "plain.npz" in msg


@pytest.mark.parametrize("meta,msg", [
    ({"format": "other-thing", "format_version": 1}, "format 'other-thing'"),
    ({"format_version": 1}, "format None"),
    ({"format": "scratchae-checkpoint", "format_version": 2}, "format_version 2 is newer"),
    ({"format": "scratchae-checkpoint", "format_version": "1"}, "bad format_version"),
    ({"format": "scratchae-checkpoint"}, "bad format_version"),
    ("[1, 2]", "must be a JSON object"),
    ("{not json", "not UTF-8 JSON"),
    (b"\xff\xfe{}", "not UTF-8 JSON"),
])
def test_refuses_bad_meta(tmp_path, meta, msg):
    _refused(raw_npz(tmp_path / "m.npz", meta=meta, w=np.ones(2)), msg)


def test_refuses_meta_of_the_wrong_kind(tmp_path):
    np.savez(tmp_path / "m.npz", __meta__=np.zeros((2, 2), np.float32))
    _refused(tmp_path / "m.npz", "1-D uint8 array")


def test_refuses_zip_members_that_are_not_arrays(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, {"w": np.ones(2)}, {})
    with zipfile.ZipFile(p, "a") as zf:
        zf.writestr("run.py", "print('hi')")
    _refused(p, "'run.py' is not an .npy array")


class _Evil:
    """Unpickling this creates the marker file: proof that a payload ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("member", ["weights", "__meta__"])
def test_refuses_pickled_data_without_running_it(tmp_path, member):
    marker = tmp_path / "PWNED"
    evil = np.array([_Evil(marker), 1], dtype=object)
    arrays = {"w": np.ones(2), member: evil}
    if member != "__meta__":
        arrays["__meta__"] = np.frombuffer(
            json.dumps({"format": "scratchae-checkpoint", "format_version": 1}).encode(), np.uint8)
    p = tmp_path / "evil.npz"
    np.savez(p, **arrays)  # np.savez pickles object arrays by default
    msg = _refused(p, "refusing to load pickled data from")
    assert str(p) in msg
    assert not marker.exists()


def test_pickles_are_refused_by_np_load_too(tmp_path, monkeypatch):
    """Defence in depth: with the header scan switched off, np.load(allow_pickle=False)
    still refuses, and the refusal is reported the same way."""
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.npz"
    np.savez(p, w=np.array([_Evil(marker)], dtype=object),
             __meta__=np.frombuffer(b'{"format": "scratchae-checkpoint", "format_version": 1}', np.uint8))
    monkeypatch.setattr(C, "_scan_members", lambda zf, path: None)
    _refused(p, "refusing to load pickled data from")
    assert not marker.exists()


# --- nested state -------------------------------------------------------------------
def optimizer_like(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {"type": "Adam", "hyper": {"lr": 0.1 * 0.5, "beta1": 0.9, "amsgrad": False},
            "step": 7,
            "state": {"encoder.0.W": {"m": rng.standard_normal((3, 2)), "v": rng.random((3, 2))},
                      "encoder.0.b": {"m": np.zeros(2, np.float32), "v": np.ones(2, np.float32)},
                      "decoder.0.W": {}},
            "betas": (0.9, 0.999)}


def test_flatten_unflatten_through_a_checkpoint(tmp_path):
    sd = optimizer_like()
    arrays, skel = C.flatten_state("optim", sd)
    assert set(arrays) == {"optim/state/encoder.0.W/m", "optim/state/encoder.0.W/v",
                           "optim/state/encoder.0.b/m", "optim/state/encoder.0.b/v"}
    json.dumps(skel)  # the skeleton goes into the JSON meta
    model = {"encoder.0.W": np.ones((3, 2))}
    p = tmp_path / "c.npz"
    save_checkpoint(p, {**arrays, **C.flatten_state("model", model)[0]}, {"optim": skel})
    loaded, meta = load_checkpoint(p)
    back = C.unflatten_state("optim", loaded, meta["optim"])
    assert back["type"] == "Adam" and back["step"] == 7 and back["hyper"] == sd["hyper"]
    assert back["betas"] == [0.9, 0.999] and back["state"]["decoder.0.W"] == {}
    for name, bufs in sd["state"].items():
        assert set(back["state"][name]) == set(bufs)
        for b, a in bufs.items():
            assert back["state"][name][b].dtype == a.dtype
            np.testing.assert_array_equal(back["state"][name][b], a)
    model_back = C.unflatten_state("model", loaded)
    assert set(model_back) == {"encoder.0.W"}


def test_flatten_copies_and_refuses_what_it_cannot_store():
    a = np.ones(2)
    arrays, _ = C.flatten_state("p", {"a": a})
    a[0] = 5
    assert arrays["p/a"][0] == 1  # a snapshot, not a view
    with pytest.raises(CheckpointError, match="without '/'"):
        C.flatten_state("p", {"a/b": np.ones(1)})
    with pytest.raises(CheckpointError, match="expected an array"):
        C.flatten_state("p", {"f": object()})
    with pytest.raises(CheckpointError, match="Python objects"):
        C.flatten_state("p", {"o": np.array([None], dtype=object)})


def test_model_and_optimizer_resume_bitwise_from_a_checkpoint(tmp_path):
    """A real Module + Adam: save mid-run, load into fresh objects, continue identically."""
    from scratchae.module import Module
    from scratchae.optim import Adam

    class Toy(Module):
        def __init__(self, seed):
            super().__init__()
            rng = np.random.default_rng(seed)
            self.add_param("W", rng.standard_normal((4, 3)))
            self.add_param("b", rng.standard_normal(3))

    def steps(model, opt, ts):
        for t in ts:
            model.zero_grad()
            for name, m, k in model.parameter_slots():
                m.grads[k] += np.sin(t + m.params[k]) + 0.1 * t
            opt.step()
        return {n: np.array(p, copy=True) for n, p in model.named_parameters()}

    model = Toy(0)
    opt = Adam(model, lr=0.05)
    steps(model, opt, range(3))
    opt_arrays, opt_skel = C.flatten_state("optim", opt.state_dict())
    model_arrays, _ = C.flatten_state("model", model.state_dict())
    save_checkpoint(tmp_path / "run.npz", {**model_arrays, **opt_arrays},
                    {"optim": opt_skel, "epoch": 3})
    want = steps(model, opt, range(3, 6))

    arrays, meta = load_checkpoint(tmp_path / "run.npz")
    model2 = Toy(1)
    model2.load_state_dict(C.unflatten_state("model", arrays))
    opt2 = Adam(model2, lr=0.05)
    opt2.load_state_dict(C.unflatten_state("optim", arrays, meta["optim"]))
    got = steps(model2, opt2, range(3, 6))
    for n in want:
        np.testing.assert_array_equal(got[n], want[n])
