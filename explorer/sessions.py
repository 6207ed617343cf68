"""Saved explorer sessions: one folder per run (or comparison of runs) under a root, written atomically.

``<root>/<id>/session.json`` (format 1: id, name, created, kind, config, meta, arrays), ``arrays.npz``
(``np.savez_compressed``; read with ``allow_pickle=False``) and optional ``exports/``. Hidden entries of the
root (``.tmp-*`` folders being written, ``.gitkeep``) are ignored. User-facing failures raise SessionError.
"""

from __future__ import annotations

import importlib.metadata  # noqa: E401
import io
import json
import os
import platform
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from backend.atomic import atomic_path

FORMAT, KINDS = 1, ("run", "compare")
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / "sessions"
_ARRAY_NAME = re.compile(r"(?!file$|allow_pickle$)[A-Za-z0-9_][A-Za-z0-9_.-]*")  # not savez's parameters


class SessionError(ValueError):
    """A user-facing failure (bad name or id, invalid data, damaged or unknown session); one line."""


def _check_unsafe(text, what: str) -> None:
    if not isinstance(text, str) or any(bad in text for bad in ("/", "\\", "..", "\0")):
        raise SessionError(f"session {what} cannot contain '/', '\\' or '..'")


def sanitize_name(name: str) -> str:
    """A human name -> a safe folder-name part ('My run 1' -> 'My-run-1'); rejects path-like names."""
    _check_unsafe(name, "names")
    s = re.sub(r"[^A-Za-z0-9._-]", "", re.sub(r"\s+", "-", name.strip()))
    s = re.sub(r"([._-])\1+", r"\1", s).lstrip(".-")[:64].rstrip(".-")
    if not s:
        raise SessionError(f"session name {name!r} is empty once unsafe characters are removed")
    return s


def environment() -> dict:
    """Versions of python, numpy, torch and gradio (those installed) and the platform, as strings."""
    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("numpy", "torch", "gradio"):
        try:
            env[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:  # gradio is optional
            continue
    return env


@dataclass
class SessionInfo:
    """A readable session, as listed."""

    id: str
    name: str
    kind: str
    created: str
    path: Path
    n_frames: int | None
    summary: str


@dataclass
class SessionProblem:
    """A folder under the root that is not a readable session (corrupt, foreign or another format)."""

    id: str
    path: Path
    problem: str


def _plain(o):
    if isinstance(o, np.generic):  # numpy scalars -> Python numbers; anything else is refused
        return o.item()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _jsonable(obj, what: str) -> dict:
    """A JSON round trip of ``obj`` (numpy scalars become Python numbers); SessionError otherwise."""
    if not isinstance(obj, dict):
        raise SessionError(f"session {what} must be a dict, not {type(obj).__name__}")
    try:
        return json.loads(json.dumps(obj, default=_plain))
    except (TypeError, ValueError) as e:
        raise SessionError(f"session {what} is not JSON-serialisable: {e}") from None


def _summary(doc: dict) -> str:
    config, arrays = doc["config"], doc["arrays"]
    parts = [str(doc["kind"])] + ([f"{config['frames']} frames"] if "frames" in config else [])
    parts += [f"{k}={str(config[k])[:60]}" for k in ("prompt", "policy", "policies") if k in config]
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    if meta.get("model_hash"):  # which weights made it (the folder when not the shipped)
        folder = str(meta.get("models") or "")
        folder = folder if len(folder) <= 60 else "…" + folder[-59:]  # a path's end says the most
        parts.append(f"model {str(meta['model_hash'])[:8]}" + (f" from {folder}" if folder else ""))
    mb = sum(np.prod(a["shape"]) * np.dtype(a["dtype"]).itemsize for a in arrays.values()) / 2**20
    return " · ".join(parts + [f"{len(arrays)} arrays ({mb:.1f} MB)"])


def _atomic_write(dest: Path, data: bytes) -> None:
    """Writes ``data`` to a hidden temporary file beside ``dest`` (mode 0o644), then renames it into place."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


class SessionStore:
    """Saves, lists, loads, deletes, exports to and zips sessions under ``root`` (created if missing)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, id: str) -> Path:
        """The folder of session ``id``: a direct child of the root; no separators or '..'."""
        _check_unsafe(id, "ids")
        p = self.root / id
        if not id or id.startswith(".") or p.resolve().parent != self.root.resolve() or not p.is_dir():
            raise SessionError(f"there is no session {id!r} in {self.root}")
        return p

    def save(self, name: str, kind: str, config: dict, arrays: dict[str, np.ndarray], meta: dict | None = None) -> str:
        """Validates and writes a new session through a hidden temporary folder; returns its id."""
        base = sanitize_name(name)
        if kind not in KINDS:
            raise SessionError(f"session kind must be one of {KINDS}, not {kind!r}")
        config, meta = _jsonable(config, "config"), _jsonable({**environment(), **(meta or {})}, "meta")
        if not isinstance(arrays, dict):
            raise SessionError(f"session arrays must be a dict, not {type(arrays).__name__}")
        for k, a in arrays.items():
            if not isinstance(k, str) or not _ARRAY_NAME.fullmatch(k):
                raise SessionError(f"invalid array name {k!r}: use letters, digits, '_', '.' and '-'")
            if not isinstance(a, np.ndarray) or a.dtype.hasobject:
                raise SessionError(f"array {k!r} must be a numpy array without Python objects")
        now = datetime.now(UTC)
        doc = {
            "format": FORMAT,
            "id": None,
            "name": name,
            "created": now.isoformat(timespec="microseconds"),
            "kind": kind,
            "config": config,
            "meta": meta,
            "arrays": {
                k: {"file": "arrays.npz", "shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()
            },
        }
        stem, tmp = f"{now:%Y%m%d-%H%M%S}-{base}", Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        try:
            with open(tmp / "arrays.npz", "wb") as f:
                np.savez_compressed(f, **arrays)
            for n in range(1, 1000):
                doc["id"] = id = stem if n == 1 else f"{stem}-{n}"
                (tmp / "session.json").write_text(json.dumps(doc, indent=1))
                try:
                    os.rename(tmp, self.root / id)  # refuses an existing (non-empty) session folder
                    return id
                except OSError:
                    if not (self.root / id).exists():
                        raise
            raise SessionError(f"too many sessions named {stem!r}")
        except OSError as e:
            raise SessionError(f"could not save session {name!r}: {e}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _read(self, id: str) -> tuple[Path, dict]:
        folder = self.path(id)
        try:
            doc = json.loads((folder / "session.json").read_text())
        except (OSError, ValueError) as e:
            raise SessionError(f"session {id!r} is damaged: session.json cannot be read ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise SessionError(f"session {id!r}: session.json has format {got!r}, this explorer reads {FORMAT}")
        if not {"name", "kind", "created"} <= doc.keys() or not all(
            isinstance(doc.get(k), dict) for k in ("config", "arrays")
        ):
            raise SessionError(f"session {id!r} is damaged: session.json lacks the session fields")
        return folder, doc

    def list(self) -> list[SessionInfo | SessionProblem]:
        """Sessions newest first, then problem folders (never raises); hidden entries and files skipped."""
        out = []
        for p in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if p.name.startswith(".") or not p.is_dir():
                continue
            try:
                _, doc = self._read(p.name)
                if not (p / "arrays.npz").is_file():
                    raise SessionError(f"session {p.name!r} is damaged: arrays.npz is missing")
                frames = doc["config"].get("frames")
                out.append(
                    SessionInfo(
                        p.name,
                        str(doc["name"]),
                        str(doc["kind"]),
                        str(doc["created"]),
                        p,
                        frames if isinstance(frames, int) else None,
                        _summary(doc),
                    )
                )
            except Exception as e:  # noqa: BLE001 - listing must never raise
                out.append(SessionProblem(p.name, p, str(e)))
        return sorted(out, reverse=True, key=lambda s: (getattr(s, "created", ""), s.id))

    def load(self, id: str) -> tuple[dict, dict[str, np.ndarray]]:
        """(session.json dict, arrays); SessionError naming the file if either is damaged."""
        folder, doc = self._read(id)
        try:
            with np.load(folder / "arrays.npz", allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # noqa: BLE001 - zip, zlib, format and OS errors alike
            raise SessionError(f"session {id!r} is damaged: arrays.npz cannot be read ({e})") from None
        for k, spec in doc["arrays"].items():
            a = arrays.get(k)
            if a is None or list(a.shape) != spec.get("shape") or a.dtype.str != spec.get("dtype"):
                raise SessionError(f"session {id!r} is damaged: arrays.npz lacks array {k!r} or it differs")
        return doc, arrays

    def delete(self, id: str) -> None:
        """Removes session ``id`` with everything in its folder."""
        shutil.rmtree(self.path(id))

    def add_file(self, id: str, relname: str, data: bytes) -> Path:
        """Atomically writes ``<id>/exports/<relname>`` (name sanitised, extension kept); returns it."""
        folder = self.path(id) / "exports"
        _check_unsafe(relname, "file names")
        stem, ext = os.path.splitext(relname)
        ext = "." + re.sub(r"[^A-Za-z0-9]", "", ext)[:16] if re.search(r"[A-Za-z0-9]", ext) else ""
        dest = folder / (sanitize_name(stem)[: 64 - len(ext)].rstrip(".-") + ext)
        folder.mkdir(exist_ok=True)
        _atomic_write(dest, bytes(data))
        return dest

    def zip(self, id: str, dest: Path | str) -> Path:
        """Atomically zips the session folder (paths relative to it) to ``dest`` (or ``dest/<id>.zip``)."""
        folder, dest = self.path(id), Path(dest)
        dest = dest / f"{id}.zip" if dest.is_dir() else dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
                    z.write(p, p.relative_to(folder).as_posix())
        _atomic_write(dest, buf.getvalue())
        return dest
