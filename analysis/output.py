"""Atomic file writes: write to a temporary file in the target directory, then rename.

A crash never leaves a half-written file that parses as valid, and files other than the
ones being written are never touched.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | Path, fill: Callable[[Any], None], *, binary: bool) -> Path:
    """Call ``fill(handle)`` on a temporary file beside ``path``, fsync, rename into place.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(Path(path), lambda h: h.write(text), binary=False)


def write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(Path(path), lambda h: h.write(data), binary=True)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def json_ready(data: Any) -> Any:
    """Plain Python types; NaN/inf become null so the JSON is standard."""
    return _clean(data)


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(json_ready(data), indent=2) + "\n")


def write_csv(path: str | Path, names: list[str], table: np.ndarray, *,
              comment: str | None = None, fmt: str = "%.8g") -> Path:
    buffer = io.StringIO()
    if comment:
        for line in comment.splitlines():
            buffer.write(f"# {line}\n")
    np.savetxt(buffer, np.asarray(table, dtype=float), delimiter=",", fmt=fmt,
               header=",".join(names), comments="")
    return write_text(path, buffer.getvalue())


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes(path, buffer.getvalue())


def write_figure(path: str | Path, figure) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=130, bbox_inches="tight")
    return write_bytes(path, buffer.getvalue())
