"""Loading frozen DeePMD ``.pth`` models on a CPU machine: GPU-saved tensors and custom ops.

No CUDA file can be written here, so a "GPU-saved" model is made by patching the storage
location recorded in the tiny model's TorchScript archive from ``cpu`` to ``cuda:0`` (the one
string a GPU save differs by for tensor data); plain ``torch.jit.load`` then fails on this
CPU-only machine exactly as a GPU-saved DPA-3 model does, and the harness' loader must map it
to the CPU. (Models whose TorchScript *code* bakes in a CUDA device, deepmd-kit < 3.0, are a
different failure that a CPU machine cannot test.)

The custom-op case: a child process registers an op in the ``deepmd`` namespace, scripts a
module calling it and saves it; this process, which never registered the op, must get a
one-line fix-it message naming the op and deepmd-kit's op library.
"""

import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from potentials.base import PotentialError
from potentials.deepmd import TINY_MODEL_FILE, DeePMDTorchScriptCalculator, load_frozen_pth

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="the GPU-saved-model test needs a machine without CUDA")


def gpu_saved_copy(src, dest):
    """Rewrite the archive with every tensor storage recorded on ``cuda:0``."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
        patched = 0
        for info in archive.infolist():
            data = archive.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                # pickle protocol 2 short unicode string 'cpu' (memoised: stored once)
                patched = data.count(b"X\x03\x00\x00\x00cpu")
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            out.writestr(info, data)
    assert patched == 1
    return dest


def li2s():
    from ase.spacegroup import crystal

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71] * 3 + [90] * 3)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_gpu_saved_model_loads_on_cpu(tmp_path):
    gpu_file = gpu_saved_copy(TINY_MODEL_FILE, tmp_path / "gpu-saved.pth")
    with pytest.raises((RuntimeError, NotImplementedError), match="CUDA"):
        torch.jit.load(str(gpu_file))  # what a loader without map_location gets
    model = load_frozen_pth(gpu_file, device="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    atoms, reference = li2s(), li2s()
    atoms.calc = DeePMDTorchScriptCalculator(model=gpu_file, device="auto")  # auto -> cpu here
    reference.calc = DeePMDTorchScriptCalculator(model=TINY_MODEL_FILE, device="cpu")
    assert atoms.get_potential_energy() == reference.get_potential_energy()
    np.testing.assert_array_equal(atoms.get_forces(), reference.get_forces())


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(PotentialError, match="no CUDA device; use --device cpu"):
        load_frozen_pth(TINY_MODEL_FILE, device="cuda")


def test_custom_op_model_names_the_op_and_the_fix(tmp_path):
    model = tmp_path / "compressed-like.pth"
    script = textwrap.dedent(f"""
        import torch
        lib = torch.library.Library("deepmd", "DEF")
        lib.define("harness_tabulate_fusion_test(Tensor x) -> Tensor")
        lib.impl("harness_tabulate_fusion_test", lambda x: 2 * x, "CPU")

        class M(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.ops.deepmd.harness_tabulate_fusion_test(x)

        m = torch.jit.script(M())
        assert float(m(torch.ones(1))) == 2.0
        torch.jit.save(m, {str(model)!r})
    """)
    maker = tmp_path / "make_model.py"  # TorchScript needs the source in a file
    maker.write_text(script)
    subprocess.run([sys.executable, str(maker)], check=True, timeout=120)
    with pytest.raises(PotentialError) as info:
        load_frozen_pth(model, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "deepmd::harness_tabulate_fusion_test" in message
    assert "op library" in message and "--no-binary deepmd-kit" in message
    assert torch.__version__ in message
