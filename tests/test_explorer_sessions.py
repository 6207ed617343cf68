"""Session store: round trips, listing, damaged folders, unsafe names, atomic writes, zip."""

import json
import time
import zipfile

import numpy as np
import pytest

from explorer import sessions
from explorer.sessions import SessionError, SessionInfo, SessionProblem, SessionStore, sanitize_name


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
        "occupancy": rng.random((5, 3), dtype=np.float32),
        "kept": rng.integers(-5, 2**40, (7,), dtype=np.int64),
    }


def _all_files(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_save_load_round_trip(tmp_path):
    store = SessionStore(tmp_path)
    arrays = _arrays()
    config = {
        "prompt": "a red circle on blue stripes",
        "frames": 4,
        "policy": "window",
        "seed": np.int64(3),
        "scale": np.float32(0.5),
        "args": {"frames": 16},
    }
    sid = store.save("My run 1", "run", config, arrays, meta={"note": "hi"})
    assert sid.endswith("-My-run-1") and (tmp_path / sid).is_dir()
    doc, got = store.load(sid)
    assert doc["format"] == 1 and doc["id"] == sid and doc["name"] == "My run 1" and doc["kind"] == "run"
    assert doc["config"] == {**config, "seed": 3, "scale": 0.5}
    assert type(doc["config"]["seed"]) is int
    assert doc["meta"]["note"] == "hi" and doc["meta"]["numpy"] == np.__version__ and "python" in doc["meta"]
    assert doc["arrays"]["video"] == {"file": "arrays.npz", "shape": [4, 64, 64, 3], "dtype": "|u1"}
    assert set(got) == set(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a)
    assert doc["created"].endswith("+00:00")


def test_same_name_gets_unique_ids(tmp_path, monkeypatch):
    """Three saves within one second share the timestamp stem and get -2, -3 suffixes (the clock is frozen so
    that a save straddling a second boundary cannot give a fresh stem instead)."""
    frozen = sessions.datetime(2026, 1, 2, 3, 4, 5, tzinfo=sessions.UTC)
    monkeypatch.setattr(
        sessions, "datetime", type("Frozen", (sessions.datetime,), {"now": classmethod(lambda cls, tz=None: frozen)})
    )
    store = SessionStore(tmp_path)
    ids = [store.save("same", "run", {}, _arrays()) for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(i.startswith(ids[0]) for i in ids) and ids[1].endswith("-2") and ids[2].endswith("-3")


def test_list_newest_first_with_summary(tmp_path):
    store = SessionStore(tmp_path)
    a = store.save("older", "run", {"frames": 4, "policy": "full"}, _arrays())
    time.sleep(0.01)
    b = store.save("newer", "compare", {"frames": 8, "policies": ["full", "h2o"]}, _arrays())
    items = store.list()
    assert [s.id for s in items] == [b, a]
    assert all(isinstance(s, SessionInfo) for s in items)
    assert items[0].kind == "compare" and items[0].n_frames == 8 and items[0].name == "newer"
    assert "8 frames" in items[0].summary and "compare" in items[0].summary
    assert "policy=full" in items[1].summary and items[1].path == tmp_path / a


def test_truncated_session_json_is_a_problem(tmp_path):
    store = SessionStore(tmp_path)
    good = store.save("good", "run", {"frames": 4}, _arrays())
    bad = store.save("bad", "run", {"frames": 4}, _arrays())
    js = tmp_path / bad / "session.json"
    js.write_bytes(js.read_bytes()[: len(js.read_bytes()) // 2])
    items = {s.id: s for s in store.list()}
    assert isinstance(items[good], SessionInfo)
    assert isinstance(items[bad], SessionProblem) and "session.json" in items[bad].problem
    with pytest.raises(SessionError, match=bad):
        store.load(bad)


def test_other_format_is_a_problem(tmp_path):
    store = SessionStore(tmp_path)
    sid = store.save("future", "run", {}, _arrays())
    js = tmp_path / sid / "session.json"
    js.write_text(json.dumps({**json.loads(js.read_text()), "format": 2}))
    (item,) = store.list()
    assert isinstance(item, SessionProblem) and "format" in item.problem
    with pytest.raises(SessionError, match="format"):
        store.load(sid)


def test_truncated_or_incomplete_npz_raises(tmp_path):
    store = SessionStore(tmp_path)
    sid = store.save("x", "run", {}, _arrays())
    npz = tmp_path / sid / "arrays.npz"
    full = npz.read_bytes()
    npz.write_bytes(full[: len(full) // 2])
    with pytest.raises(SessionError, match="arrays.npz"):
        store.load(sid)
    np.savez_compressed(npz, video=_arrays()["video"])  # readable, but two listed arrays are missing
    with pytest.raises(SessionError, match="occupancy|kept"):
        store.load(sid)


def test_foreign_folder_and_plain_files_do_not_break_list(tmp_path):
    store = SessionStore(tmp_path)
    (tmp_path / ".gitkeep").write_text("")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.bin").write_bytes(b"\0")
    (tmp_path / ".tmp-abandoned").mkdir()
    sid = store.save("ok", "run", {}, _arrays())
    items = store.list()
    assert [type(s) for s in items] == [SessionInfo, SessionProblem]
    assert items[0].id == sid and items[1].id == "foreign" and "session.json" in items[1].problem
    with pytest.raises(SessionError):
        store.load("foreign")


@pytest.mark.parametrize("bad", ["../evil", "a/b", "a\\b", "..", "x..y", "/tmp/abs"])
def test_unsafe_names_and_ids_are_rejected(tmp_path, bad):
    root = tmp_path / "root"
    store = SessionStore(root)
    (tmp_path / "evil").mkdir()  # a real folder next to the root that '../evil' would reach
    (tmp_path / "evil" / "keep").write_text("k")
    before = _all_files(tmp_path)
    with pytest.raises(SessionError, match="cannot contain"):
        store.save(bad, "run", {}, _arrays())
    for op in (store.load, store.delete, store.path):
        with pytest.raises(SessionError):
            op(bad)
    with pytest.raises(SessionError):
        store.add_file(store.save("fine", "run", {}, {}), bad, b"x")
    assert (tmp_path / "evil" / "keep").exists()
    assert [f for f in _all_files(tmp_path) if f not in before and not f.startswith("root/")] == []


def test_sanitize_name():
    assert sanitize_name("My run 1") == "My-run-1"
    assert sanitize_name("a*b") == "ab"
    assert sanitize_name("  .hidden  --  name!! ") == "hidden-name"
    assert len(sanitize_name("x" * 300)) == 64
    for empty in ("", "   ", "***", "."):
        with pytest.raises(SessionError):
            sanitize_name(empty)
    with pytest.raises(SessionError, match=r"'/', '\\' or '\.\.'"):
        sanitize_name("a/b")


def test_object_arrays_and_non_json_config_rejected(tmp_path):
    store = SessionStore(tmp_path)
    with pytest.raises(SessionError, match="objects"):
        store.save("o", "run", {}, {"bad": np.array([{"a": 1}, None], dtype=object)})
    with pytest.raises(SessionError, match="numpy"):
        store.save("o", "run", {}, {"bad": [1, 2, 3]})
    with pytest.raises(SessionError, match="JSON"):
        store.save("c", "run", {"fn": print}, _arrays())
    with pytest.raises(SessionError, match="JSON"):
        store.save("c", "run", {}, _arrays(), meta={"path": tmp_path})
    with pytest.raises(SessionError, match="kind"):
        store.save("k", "other", {}, _arrays())
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    store = SessionStore(tmp_path)
    sid = store.save("before", "run", {}, _arrays())

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sessions.np, "savez_compressed", boom)
    with pytest.raises(SessionError, match="disk full"):
        store.save("during", "run", {}, _arrays())
    assert [p.name for p in tmp_path.iterdir()] == [sid]
    assert [s.id for s in store.list()] == [sid]


def test_delete(tmp_path):
    store = SessionStore(tmp_path)
    a, b = store.save("a", "run", {}, _arrays()), store.save("b", "run", {}, _arrays())
    store.delete(a)
    assert not (tmp_path / a).exists() and [s.id for s in store.list()] == [b]
    with pytest.raises(SessionError):
        store.delete(a)
    with pytest.raises(SessionError):
        store.load(a)


def test_add_file_and_zip(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    sid = store.save("zipme", "run", {"frames": 4}, _arrays())
    out = store.add_file(sid, "my video (1).mp4", b"\x00mp4")
    assert out == tmp_path / "sessions" / sid / "exports" / "my-video-1.mp4" and out.read_bytes() == b"\x00mp4"
    dest = store.zip(sid, tmp_path / "out" / "s.zip")
    with zipfile.ZipFile(dest) as z:
        names = set(z.namelist())
        assert {"session.json", "arrays.npz", "exports/my-video-1.mp4"} <= names
        assert json.loads(z.read("session.json"))["id"] == sid
    assert [p.name for p in dest.parent.iterdir()] == ["s.zip"]  # no temporary file left beside it
    assert out.stat().st_mode & 0o777 == dest.stat().st_mode & 0o777 == 0o644  # readable by whoever it is shared with
    assert store.zip(sid, tmp_path / "out") == tmp_path / "out" / f"{sid}.zip"


def test_ids_must_be_direct_children_of_root(tmp_path):
    outside = SessionStore(tmp_path / "other")
    sid = outside.save("elsewhere", "run", {}, _arrays())
    store = SessionStore(tmp_path / "new" / "root")  # created when missing
    assert store.root.is_dir() and store.list() == []
    (store.root / "link").symlink_to(outside.root / sid, target_is_directory=True)
    for op in (store.path, store.load, store.delete):
        with pytest.raises(SessionError, match="no session"):
            op("link")
    assert isinstance(store.list()[0], SessionProblem) and (outside.root / sid / "arrays.npz").exists()
    with pytest.raises(SessionError, match="no session"):
        store.load("20990101-000000-missing")
