"""Crash-safe model files: a checksummed container, atomic replace, recovery.

File layout (little endian)::

    magic    8 bytes   b"KMSPAM" + version (uint16)
    length   uint64    length of the payload
    sha256   32 bytes  of the payload
    payload            zlib-compressed body

    body     uint32 JSON length, JSON metadata, then the binary sections the
             metadata lists (sparse weights: uint32 indices, float32 or float16
             values), for the org model and each user model.

Saving writes a temporary file in the same directory, fsyncs it, moves the
current file to ``<name>.bak`` and renames the new one into place, then fsyncs
the directory (the same write-then-rename discipline as the message store).
Loading checks magic, version, length and checksum; a bad file raises
``CorruptModel`` and ``load_with_recovery`` falls back to the backup, then to
the starter model shipped in ``starter/``, then to an empty model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .features import FEATURES_VERSION
from .model import Model, UserModel

MAGIC = b"KMSPAM"
VERSION = 1
_HEADER = struct.Struct("<6sHQ32s")
STARTER_PATH = Path(__file__).resolve().parent / "starter" / "model.bin"


class CorruptModel(Exception):
    """The file is not a complete, intact keepmail spam model."""


@dataclass
class ModelState:
    model: Model
    users: dict[str, UserModel] = field(default_factory=dict)
    reputation: dict[str, list[int]] = field(default_factory=dict)
    source: str = "empty"       # where it was loaded from: file, backup, starter, empty
    # What each user contributed to each reputation key (bounds one user's influence).
    voters: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def _pack(vals: Any, half: bool) -> bytes:
    """float32 values as little-endian float32, or float16 when `half`."""
    vals = np.asarray(vals, np.float32)
    if not half:
        return vals.astype("<f4").tobytes()
    packed = vals.astype("<f2")
    if not np.isfinite(packed).all() and np.isfinite(vals).all():
        raise OverflowError("weight too large for float16")
    return packed.tobytes()


def _sparse_section(idx: Any, vals: Any, half: bool) -> tuple[bytes, dict[str, Any]]:
    idx = np.asarray(idx, np.int64).astype("<u4")
    return idx.tobytes() + _pack(vals, half), {"n": len(idx), "half": half}


def dump(state: ModelState, *, half: bool = False, level: int = 1) -> bytes:
    """Serialize `state`; `half` stores weights as float16 (for the small starter file).

    zlib level 1 by default: float weights barely compress better at 9, which is
    several times slower, and the server saves while running.
    """
    m = state.model
    sections: list[bytes] = []
    idx, vals, acc = m.nonzero()
    blob, info = _sparse_section(idx, vals, half)
    sections.append(blob + _pack(acc, half))
    meta: dict[str, Any] = {"features": FEATURES_VERSION, "bits": m.bits, "bias": m.bias, "learned": m.learned,
                            "org": info, "users": {}, "reputation": state.reputation,
                            "voters": state.voters}
    for name, user in state.users.items():
        blob, info = _sparse_section(np.fromiter(user.weights.keys(), np.int64, len(user.weights)),
                                     np.fromiter(user.weights.values(), np.float32,
                                                 len(user.weights)), False)
        sections.append(blob)
        meta["users"][name] = {**info, "bias": user.bias, "updates": user.updates}
    head = json.dumps(meta, separators=(",", ":")).encode()
    body = struct.pack("<I", len(head)) + head + b"".join(sections)
    payload = zlib.compress(body, level)
    return _HEADER.pack(MAGIC, VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def load(data: bytes) -> ModelState:
    """Parse a model file's bytes; CorruptModel on any damage."""
    if len(data) < _HEADER.size:
        raise CorruptModel("file too short")
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptModel("not a keepmail spam model")
    if version != VERSION:
        raise CorruptModel(f"unsupported model version {version}")
    payload = data[_HEADER.size:]
    if len(payload) != length or hashlib.sha256(payload).digest() != digest:
        raise CorruptModel("checksum mismatch (truncated or damaged)")
    try:
        return _decode(zlib.decompress(payload))
    except CorruptModel:
        raise
    except Exception as exc:   # a checksummed file that still does not parse
        raise CorruptModel(f"bad model body: {exc}") from exc


def _read_array(body: bytes, pos: int, n: int, dtype: str) -> tuple[np.ndarray, int]:
    size = np.dtype(dtype).itemsize
    if n < 0 or pos + size * n > len(body):
        raise CorruptModel("section shorter than announced")
    return np.frombuffer(body, dtype, n, pos), pos + size * n


def _read_values(body: bytes, pos: int, n: int, half: bool) -> tuple[np.ndarray, int]:
    """n float16 or float32 values at `pos`, as float32."""
    vals, pos = _read_array(body, pos, n, "<f2" if half else "<f4")
    return vals.astype(np.float32), pos


def _read_sparse(body: bytes, pos: int,
                 info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    n = int(info["n"])
    idx, pos = _read_array(body, pos, n, "<u4")
    vals, pos = _read_values(body, pos, n, bool(info.get("half")))
    return idx.astype(np.int64), vals, pos


def _decode(body: bytes) -> ModelState:
    (hlen,) = struct.unpack_from("<I", body)
    meta = json.loads(body[4:4 + hlen])
    pos = 4 + hlen
    if meta.get("features") != FEATURES_VERSION:
        # Same container, different feature hashing: its weights would score noise.
        raise CorruptModel(f"model built for features v{meta.get('features')}, "
                           f"this is v{FEATURES_VERSION}")
    bits = int(meta["bits"])
    model = Model(bits, bias=float(meta["bias"]), learned=int(meta["learned"]))
    idx, vals, pos = _read_sparse(body, pos, meta["org"])
    accs, pos = _read_values(body, pos, len(idx), bool(meta["org"].get("half")))
    if len(idx) and int(idx.max()) >= len(model.weights):
        raise CorruptModel("weight index out of range")
    model.weights[idx] = vals
    model.accum[idx] = accs
    users: dict[str, UserModel] = {}
    for name, info in meta["users"].items():
        uidx, uvals, pos = _read_sparse(body, pos, info)
        users[name] = UserModel(dict(zip(uidx.tolist(), uvals.tolist(), strict=True)),
                                float(info["bias"]), int(info.get("updates", 0)))
    if pos != len(body):
        raise CorruptModel("trailing bytes in model body")
    reputation = {k: [int(v[0]), int(v[1])] for k, v in meta["reputation"].items()}
    voters = {k: {u: [int(c[0]), int(c[1])] for u, c in v.items()}
              for k, v in meta.get("voters", {}).items()}    # absent in older files
    return ModelState(model, users, reputation, voters=voters)


def save_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        # Keep the previous good file: recovery falls back to it if the new one is damaged later.
        os.replace(path, backup_path(path))
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def load_file(path: Path) -> ModelState:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptModel(f"cannot read {path}: {exc}") from exc
    return load(data)


def load_with_recovery(path: Path | None, *, bits: int = 22,
                       errors: list[str] | None = None) -> ModelState:
    """The model at `path`, else its backup, else the starter model, else an empty one.

    Problems met on the way are appended to `errors` (for the flight recorder).
    """
    candidates: list[tuple[Path, str]] = []
    if path is not None:
        candidates += [(path, "file"), (backup_path(path), "backup")]
    candidates.append((STARTER_PATH, "starter"))
    for candidate, source in candidates:
        if not candidate.exists():
            continue
        try:
            state = load_file(candidate)
        except CorruptModel as exc:
            if errors is not None:
                errors.append(f"{candidate}: {exc}")
            continue
        state.source = source
        if source == "starter":
            state.reputation, state.users, state.voters = {}, {}, {}
        return state
    return ModelState(Model(bits), source="empty")
