"""``harness export mace``: turn a MACE ``.model`` into the TorchScript file we run.

mace-torch (0.3.16 pins ``e3nn==0.4.4``) cannot share an environment with SevenNet
(``e3nn>=0.5``), so the export runs in a separate virtual environment that has
mace-torch, through a subprocess (argument list, ``check=True``, timeout, captured
output). The result, ``*-lammps.pt``, is mace-torch's ``LAMMPS_MACE`` wrapper compiled
to TorchScript; it loads in the main environment with plain ``torch.jit.load``
(:mod:`potentials.mace`). Beside it, the main environment writes the per-layer split
``*-lammps-layers.pt`` (:func:`write_layers_beside`) that ``pair_style mace`` runs on
several MPI ranks. Create the export environment once with
``tools/mace/setup_export_env.sh`` (commands in :data:`SETUP_COMMANDS`).

Which interpreter runs the export: the ``python`` argument, else ``$IONTRANSPORT_MACE_PYTHON``,
else ``<repository>/.venv-mace/bin/python``.

This file has two halves. The top half runs in the main environment. The bottom half
(:func:`_worker_main`) is what the subprocess executes: ``python -I harness/export.py
...`` in the mace-torch environment, importing only the standard library, torch and
mace. Keep module-level imports to the standard library so both halves work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ENV_VAR = "IONTRANSPORT_MACE_PYTHON"
MACE_TORCH_VERSION = "0.3.16"
TORCH_VERSION = "2.13.0"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENV = REPO_ROOT / ".venv-mace"

SETUP_COMMANDS = (
    f"python3 -m venv {DEFAULT_ENV}\n"
    f"{DEFAULT_ENV}/bin/pip install -c <(echo torch=={TORCH_VERSION}) "
    f"torch=={TORCH_VERSION} mace-torch=={MACE_TORCH_VERSION}\n"
    f"(or: bash tools/mace/setup_export_env.sh; another location: export {ENV_VAR}=/path/bin/python)"
)


def _export_error(message: str) -> Exception:
    from potentials.base import PotentialError

    return PotentialError(message)


def mace_python(python: str | Path | None = None) -> Path:
    """The interpreter of the mace-torch environment (checked to exist)."""
    if python is not None:
        candidate, origin = Path(python).expanduser(), "--python"
    elif os.environ.get(ENV_VAR):
        candidate, origin = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    else:
        candidate, origin = DEFAULT_ENV / "bin" / "python", "the default location"
    if not (candidate.is_file() and os.access(candidate, os.X_OK)):
        raise _export_error(
            f"no MACE export environment: {candidate} ({origin}) is not an interpreter. "
            f"mace-torch cannot live in the main environment (it pins e3nn 0.4.4, SevenNet "
            f"needs e3nn >= 0.5). Create it once with:\n{SETUP_COMMANDS}")
    return candidate


def export_mace(*, model: str | Path | None = None, foundation: str | None = None,
                out: str | Path | None = None, python: str | Path | None = None,
                head: str | None = None, dtype: str = "float64",
                timeout_s: float = 3600.0) -> Path:
    """Export a MACE model to ``*-lammps.pt``; returns the written path.

    ``model`` is a mace-torch ``.model`` file; ``foundation`` a MACE-MP family name
    (downloaded by mace-torch, so it needs internet). ``out`` defaults to
    ``<model stem>-lammps.pt`` beside the model, or to the harness cache for a foundation
    model (where ``--potential mace-mpa-0-medium`` etc. look for it). A provenance JSON
    (:func:`potentials.mace.sidecar_path`) is written next to the export. ``head``
    selects one head of a multi-head model (required when there are several).
    """
    from potentials.mace import FOUNDATION_MODELS, foundation_export_path, sidecar_path

    if (model is None) == (foundation is None):
        raise _export_error("give exactly one of --model FILE.model or --foundation NAME")
    if dtype not in ("float64", "float32"):
        raise _export_error(f"dtype must be float64 or float32, not '{dtype}'")
    worker_args: list[str] = []
    if model is not None:
        model = Path(model).expanduser().resolve()
        if not model.is_file():
            raise _export_error(f"MACE model file not found: {model}")
        worker_args += ["--model", str(model)]
        default_out = model.with_name(model.name.removesuffix(".model") + "-lammps.pt")
    else:
        if foundation not in FOUNDATION_MODELS:
            raise _export_error(f"unknown MACE foundation model '{foundation}'; known: "
                                f"{', '.join(FOUNDATION_MODELS)}")
        worker_args += ["--foundation", str(foundation)]
        default_out = foundation_export_path(str(foundation))
    out = Path(out).expanduser().resolve() if out is not None else default_out
    if out.suffix != ".pt":
        raise _export_error(f"output must end in .pt (e.g. my-lammps.pt), not {out.name}")
    interpreter = mace_python(python)
    _check_mace_env(interpreter)
    if model is not None:
        import warnings

        from potentials.trust import UnsafeModelWarning

        warnings.warn(f"{model.name} is a mace-torch pickle: exporting it unpickles it in full "
                      "(torch.load weights_only=False, in the export environment), which can "
                      "run arbitrary code; export only model files from sources you trust",
                      UnsafeModelWarning, stacklevel=2)

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-mace-") as tmp:
        tmp_out, tmp_meta = Path(tmp) / out.name, Path(tmp) / "meta.json"
        cmd = [str(interpreter), "-I", str(Path(__file__).resolve()), *worker_args,
               "--out", str(tmp_out), "--meta", str(tmp_meta), "--dtype", dtype]
        if head is not None:
            cmd += ["--head", head]
        try:
            subprocess.run(cmd, check=True, timeout=timeout_s, capture_output=True, text=True,
                           cwd=tmp)
        except subprocess.CalledProcessError as exc:
            tail = "\n".join((exc.stderr or exc.stdout or "").strip().splitlines()[-15:])
            raise _export_error(f"MACE export failed (exit {exc.returncode}) in {interpreter}:"
                                f"\n{tail}") from exc
        except subprocess.TimeoutExpired as exc:
            raise _export_error(f"MACE export did not finish within {timeout_s:.0f} s") from exc
        meta = json.loads(tmp_meta.read_text())
        _check_export_loads(tmp_out, meta)
        meta["description"] = (f"MACE foundation model '{foundation}'" if foundation
                               else f"exported from {Path(model).name}")
        tmp_meta.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp_out, out)
        os.replace(tmp_meta, sidecar_path(out))
    write_layers_beside(out)
    return out


def write_layers_beside(export: Path) -> Path | None:
    """The per-layer split ``X-lammps-layers.pt`` beside ``X-lammps.pt``, for
    ``pair_style mace parallel`` (several MPI ranks); made here in the main environment
    from the export alone (:mod:`potentials.mace_layers`) and checked against it. An
    export that cannot be split still runs, on one rank or in whole-model domain
    decomposition: a warning, not an error."""
    from potentials.base import PotentialError
    from potentials.mace_layers import write_layers

    try:
        return write_layers(export)
    except PotentialError as exc:
        print(f"warning: no per-layer split for {export.name} ({exc}); several MPI ranks will "
              "use whole-model domain decomposition", file=sys.stderr)
        return None


def _check_mace_env(interpreter: Path) -> None:
    probe = [str(interpreter), "-I", "-c",
             "import importlib.metadata as m; print(m.version('mace-torch'))"]
    try:
        result = subprocess.run(probe, check=True, timeout=120, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        raise _export_error(f"{interpreter} has no mace-torch. Create the export environment "
                            f"with:\n{SETUP_COMMANDS}") from exc
    version = result.stdout.strip()
    if version != MACE_TORCH_VERSION:
        print(f"warning: export environment has mace-torch {version}; the harness is tested "
              f"with {MACE_TORCH_VERSION}", file=sys.stderr)


def _check_export_loads(path: Path, meta: dict) -> None:
    """The export must load here, without mace-torch, and say what the worker said."""
    from potentials.mace import load_torchscript

    module = load_torchscript(path)
    numbers = [int(z) for z in module.atomic_numbers.tolist()]
    if numbers != meta["atomic_numbers"] or abs(float(module.r_max) - meta["r_max"]) > 1e-9:
        raise _export_error(f"the export in {path} does not match what the worker reported")


# --- worker: runs in the mace-torch environment ---------------------------------------------
def _worker_main(argv: list[str] | None = None) -> None:
    import argparse
    import hashlib
    from importlib.metadata import version

    import torch
    from e3nn.util import jit
    from mace.calculators import LAMMPS_MACE

    parser = argparse.ArgumentParser(description="export a MACE model to TorchScript "
                                     "(LAMMPS_MACE wrapper); run in the mace-torch env")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model")
    source.add_argument("--foundation")
    parser.add_argument("--out", required=True)
    parser.add_argument("--meta", required=True)
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--head", default=None)
    args = parser.parse_args(argv)

    if args.foundation is not None:
        from mace.calculators.foundations_models import (download_mace_mp_checkpoint,
                                                         mace_mp_urls)

        if args.foundation not in mace_mp_urls:  # unknown names would be taken as URLs
            raise SystemExit(f"unknown foundation model {args.foundation!r}; mace-torch "
                             f"knows {sorted(mace_mp_urls)}")
        try:
            path = download_mace_mp_checkpoint(args.foundation)
        except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError
            raise SystemExit(f"could not download MACE foundation model {args.foundation!r} "
                             f"from {mace_mp_urls[args.foundation]} (needs internet): "
                             f"{exc}") from None
    else:
        path = args.model
    model = torch.load(path, map_location="cpu", weights_only=False)
    model = model.double() if args.dtype == "float64" else model.float()
    heads = list(getattr(model, "heads", None) or [None])
    if args.head is not None and args.head not in heads:
        raise SystemExit(f"model has no head {args.head!r}; heads: {heads}")
    if args.head is None and len(heads) > 1:
        raise SystemExit(f"model has several heads {heads}; choose one with head=...")
    wrapper = LAMMPS_MACE(model, head=args.head) if args.head else LAMMPS_MACE(model)
    jit.compile(wrapper).save(args.out)
    with open(path, "rb") as handle:
        source_sha256 = hashlib.sha256(handle.read()).hexdigest()
    meta = {
        "source": os.path.basename(path),
        "source_sha256": source_sha256,
        "foundation": args.foundation,
        "head": args.head if args.head is not None else heads[-1],
        "heads": heads,
        "dtype": args.dtype,
        "atomic_numbers": [int(z) for z in model.atomic_numbers.tolist()],
        "r_max": float(model.r_max),
        "mace_torch_version": version("mace-torch"),
        "torch_version": torch.__version__,
        "e3nn_version": version("e3nn"),
        "wrapper": "mace.calculators.LAMMPS_MACE + e3nn.util.jit.compile",
    }
    with open(args.meta, "w") as handle:
        json.dump(meta, handle, indent=1)


if __name__ == "__main__":
    _worker_main()
