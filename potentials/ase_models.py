"""uMLIPs that run through their ASE calculators and ``fix external`` (CHGNet, MatterSim).

Weights: CHGNet ships its checkpoints inside the wheel (0.3.0 is the default). MatterSim
downloads its checkpoint on first use (needs internet once) and is an optional install:
``pip install -c constraints.txt mattersim==1.2.3`` (1.2.4+ needs Python 3.12).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from potentials.base import LammpsSetup, ModelInfo, Potential, PotentialError, package_version
from potentials.external import ExternalModelPotential


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CHGNetPotential(ExternalModelPotential, Potential):
    family = "chgnet"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 model_version: str = "0.3.0") -> None:
        super().__init__(name=name)
        if route not in ("auto", "external"):
            raise PotentialError(f"CHGNet runs only through fix external (route 'external'), "
                                 f"not '{route}'")
        self.model_version = model_version
        self.device = device

    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        return self.external_lammps_setup()

    def weights_file(self) -> Path | None:
        import chgnet

        weights = sorted(Path(chgnet.__file__).parent.glob(
            f"pretrained/{self.model_version}/*.pth.tar"))
        return weights[0] if weights else None

    def _check_weights(self) -> None:
        from potentials.trust import PINNED_SHA256, check_torch_file

        weights = self.weights_file()
        if weights is None:
            raise PotentialError(f"CHGNet {self.model_version} weights are not in the chgnet "
                                 "package; reinstall it (`pip install -c constraints.txt "
                                 "--force-reinstall --no-deps chgnet`)")
        key = f"chgnet-{self.model_version}"
        self.model_trust = check_torch_file(weights,
                                            pinned_key=key if key in PINNED_SHA256 else None)

    def _model(self) -> Any:
        import contextlib
        import io

        from chgnet.model import CHGNet

        self._check_weights()
        with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet v0.3.0 initialized ..."
            return CHGNet.load(model_name=self.model_version, verbose=False,
                               use_device=resolve_device(self.device))

    def ase_calculator(self) -> Any:
        import contextlib
        import io

        from chgnet.model.dynamics import CHGNetCalculator

        class QuietCHGNetCalculator(CHGNetCalculator):
            """CHGNet's calculator without its per-process banner and the torch warning
            it triggers on every call ("Converting a tensor with requires_grad=True to a
            scalar"), which would otherwise flood campaign logs."""

            def calculate(self, *args: Any, **kwargs: Any) -> None:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Converting a tensor with "
                                            "requires_grad=True to a scalar")
                    super().calculate(*args, **kwargs)

        with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu"
            return QuietCHGNetCalculator(model=self._model(),
                                         use_device=resolve_device(self.device))

    def model_info(self) -> ModelInfo:
        from potentials.trust import file_sha256

        weights = self.weights_file()
        return ModelInfo(name=self.name, family=self.family, package="chgnet",
                         package_version=package_version("chgnet"),
                         model_file=str(weights) if weights else None,
                         model_sha256=file_sha256(weights) if weights else None,
                         route="external",
                         extra={"model_version": self.model_version,
                                "model_trust": getattr(self, "model_trust", None)})


class MatterSimPotential(ExternalModelPotential, Potential):
    family = "mattersim"

    def __init__(self, *, name: str, route: str = "auto", device: str = "auto",
                 checkpoint: str = "mattersim-v1.0.0-1M.pth", model_file: Path | None = None) -> None:
        super().__init__(name=name)
        if route not in ("auto", "external"):
            raise PotentialError("MatterSim runs through fix external here (route 'external'); "
                                 "the ML-IAP route needs a full LAMMPS build (see cmake/presets)")
        self.checkpoint = str(model_file) if model_file else checkpoint
        self.device = device

    def lammps_setup(self, *, type_elements: list[str], workdir: Path, nranks: int) -> LammpsSetup:
        return self.external_lammps_setup()

    def ase_calculator(self) -> Any:
        try:
            from mattersim.forcefield import MatterSimCalculator
        except ImportError as exc:
            raise PotentialError("MatterSim is not installed: "
                                 "pip install -c constraints.txt mattersim==1.2.3") from exc
        try:
            return MatterSimCalculator.from_checkpoint(load_path=self.checkpoint,
                                                       device=resolve_device(self.device))
        except OSError as exc:
            raise PotentialError(f"could not load MatterSim checkpoint '{self.checkpoint}' "
                                 f"(first use downloads it and needs internet): {exc}") from exc

    def model_info(self) -> ModelInfo:
        return ModelInfo(name=self.name, family=self.family, package="mattersim",
                         package_version=package_version("mattersim"),
                         model_file=self.checkpoint, route="external")
