"""Safe model files: pinned hashes for named models, ``weights_only`` checks for pickles.

Every model file goes into the manifest with its sha256 (:class:`potentials.base.ModelInfo`).
On top of that:

* **Pinned hashes.** The models the harness ships or names (the checkpoints bundled in the
  pinned sevenn and chgnet wheels, our tiny test models) have their sha256 in
  :data:`PINNED_SHA256`. Before such a file is loaded its hash is checked; a mismatch (a
  corrupt download, a truncated file, a file swapped in site-packages) stops with an error
  naming both hashes and the fix.
* **Pickles.** A torch checkpoint is first opened with ``torch.load(weights_only=True)``,
  which cannot run code. Files that need full unpickling (sevenn's checkpoints store
  Python objects; so do mace-torch ``.model`` files) can run arbitrary code when loaded:
  for a pinned file that is accepted (its hash says it is the file the package shipped),
  for any other file the user gets an :class:`UnsafeModelWarning` saying so. A file that
  is not a readable checkpoint at all (truncated, random bytes) is a clear error before
  the model package sees it.

The outcome (``pinned``, ``load``) is recorded in the manifest under
``potential.extra.model_trust``.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from potentials.base import PotentialError, sha256_file

#: sha256 of the model files named models load (pinned package versions: constraints.txt)
PINNED_SHA256: dict[str, str] = {
    # sevenn 0.13.0 wheel, sevenn/pretrained_potentials/
    "7net-0": "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36",
    "7net-l3i5": "a7ff190d41efe5b8317a03d20a468e4036a1a3e64e0b14fdbab64ac3f4bfc09d",
    "7net-MF-0": "81791329b37d445f46b531578c182c41792d98c7814222c9e5dde276402225fd",
    # chgnet 0.4.2 wheel, chgnet/pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar
    "chgnet-0.3.0": "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1",
    # this repository's test fixtures (potentials/data/)
    "mace-tiny-LiPSCl-lammps.pt": "d09fa027ae51bbaca551a15ee10058660bc717ae563f9f4afa0d28c95bf9497a",
    "deepmd-tiny-LiS.pth": "6ca9a71d0f320105f4af5f24650f4d8143c41f851447ffb1522826063106db34",
}


class UnsafeModelWarning(UserWarning):
    """A model file needs full unpickling (it can run code) and is not a pinned file."""


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime)."""
    stat = Path(path).stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def verify_pinned(key: str, path: str | Path) -> str:
    """Check ``path`` against the pinned hash ``key``; return the hash."""
    path = Path(path)
    if not path.is_file():
        raise PotentialError(f"model file for '{key}' not found: {path}")
    digest = file_sha256(path)
    expected = PINNED_SHA256[key]
    if digest != expected:
        raise PotentialError(
            f"model file {path} for '{key}' has sha256 {digest[:16]}..., not the pinned "
            f"{expected[:16]}...: it is corrupt, truncated or was replaced. Reinstall the "
            "package that ships it (`pip install -c constraints.txt --force-reinstall "
            "--no-deps <package>`) or, for the repository's test models, `git checkout` the "
            "file")
    return digest


def check_torch_file(path: str | Path, *, pinned_key: str | None = None) -> dict[str, Any]:
    """How a torch checkpoint can be loaded, checked before the model package loads it.

    Returns ``{"sha256", "pinned", "load"}`` with ``load`` = ``weights_only`` (safe) or
    ``full_unpickle`` (warned about unless pinned). Raises :class:`PotentialError` for a
    file that is not a torch checkpoint or that fails its pinned hash.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise PotentialError(f"model file not found: {path}")
    digest = verify_pinned(pinned_key, path) if pinned_key else file_sha256(path)
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        load = "weights_only"
    except Exception as exc:  # noqa: BLE001 - damaged bytes raise anything (IndexError, ...)
        # a well-formed pickle that holds Python objects beyond tensors: torch names the
        # global it refused; any other unpickler complaint means a damaged file
        if isinstance(exc, pickle.UnpicklingError) and "Unsupported global" in str(exc):
            load = "full_unpickle"
        else:
            raise _unreadable(path, exc) from exc
    if load == "full_unpickle" and pinned_key is None:
        warnings.warn(
            f"{path.name} can only be loaded by full unpickling (torch.load weights_only="
            "False), which can run arbitrary code: load model files only from sources you "
            "trust", UnsafeModelWarning, stacklevel=3)
    return {"sha256": digest, "pinned": pinned_key is not None, "pinned_key": pinned_key,
            "load": load}


def _unreadable(path: Path, exc: BaseException) -> PotentialError:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return PotentialError(
        f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {first}); the "
        "file is corrupt or truncated, or not a model file")


#: where the repository's pinned test models live
SHIPPED_DIR = Path(__file__).resolve().parent / "data"


def verify_if_shipped(path: str | Path) -> dict[str, Any]:
    """For a TorchScript model: the pinned-hash check when it is one of our shipped files.

    TorchScript archives are loaded by ``torch.jit.load``, which runs no pickled Python
    code, so only the hash matters here.
    """
    path = Path(path).resolve()
    key = path.name if path.parent == SHIPPED_DIR and path.name in PINNED_SHA256 else None
    digest = verify_pinned(key, path) if key else file_sha256(path)
    return {"sha256": digest, "pinned": key is not None, "pinned_key": key,
            "load": "torchscript"}
