"""Safe model files (potentials/trust.py): pinned hashes, weights_only checks, corrupt files.

Fault injection on model files: truncated and random-byte checkpoints, a pinned file whose
hash no longer matches, an unpinned checkpoint that needs full unpickling. Each must stop
with one clear error (or warn) before the model package unpickles anything.
"""

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from potentials import trust
from potentials.base import PotentialError
from potentials.registry import get_potential


def sevennet_checkpoint() -> Path:
    from sevenn.util import pretrained_name_to_path

    return Path(pretrained_name_to_path("7net-0"))


def test_every_pinned_file_matches_the_installed_one():
    import chgnet
    from sevenn.util import pretrained_name_to_path

    files = {key: Path(pretrained_name_to_path(key)) for key in ("7net-0", "7net-l3i5",
                                                                  "7net-MF-0")}
    files["chgnet-0.3.0"] = next(Path(chgnet.__file__).parent.glob("pretrained/0.3.0/*.pth.tar"))
    for name in ("mace-tiny-LiPSCl-lammps.pt", "deepmd-tiny-LiS.pth"):
        files[name] = trust.SHIPPED_DIR / name
    assert set(files) == set(trust.PINNED_SHA256)
    for key, path in files.items():
        assert trust.verify_pinned(key, path) == trust.PINNED_SHA256[key]


def test_named_models_record_pinned_and_load_kind():
    sevennet = get_potential("sevennet-0")
    assert "Li" in sevennet.elements
    assert sevennet.model_trust["pinned"] and sevennet.model_trust["load"] == "full_unpickle"
    assert sevennet.model_info().extra["model_trust"]["pinned_key"] == "7net-0"
    chgnet = get_potential("chgnet")
    chgnet._check_weights()
    assert chgnet.model_trust == {"sha256": trust.PINNED_SHA256["chgnet-0.3.0"], "pinned": True,
                                  "pinned_key": "chgnet-0.3.0", "load": "weights_only"}
    for name in ("mace-tiny-test", "deepmd-tiny-test"):
        pot = get_potential(name)
        pot.ase_calculator()
        assert pot.model_trust["pinned"] and pot.model_trust["load"] == "torchscript"


def test_pinned_hash_mismatch_is_refused(monkeypatch):
    monkeypatch.setitem(trust.PINNED_SHA256, "7net-0", "0" * 64)
    with pytest.raises(PotentialError, match="not the pinned.*corrupt, truncated or was replaced"):
        get_potential("sevennet-0").elements
    monkeypatch.setitem(trust.PINNED_SHA256, "deepmd-tiny-LiS.pth", "1" * 64)
    with pytest.raises(PotentialError, match="not the pinned"):
        get_potential("deepmd-tiny-test").ase_calculator()


# seeds whose bytes make torch's unpickler raise UnpicklingError, IndexError, KeyError and
# UnicodeDecodeError (an unseeded os.urandom once hit IndexError, which escaped)
@pytest.mark.parametrize("damage", ["truncated", "empty", "random_bytes_0", "random_bytes_2",
                                    "random_bytes_20", "random_bytes_195"])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, damage):
    import random

    source = sevennet_checkpoint().read_bytes()
    bad = tmp_path / f"{damage}.pth"
    if damage.startswith("random_bytes"):
        data = random.Random(int(damage.rsplit("_", 1)[1])).randbytes(4096)
    else:
        data = {"truncated": source[: len(source) // 3], "empty": b""}[damage]
    bad.write_bytes(data)
    with pytest.raises(PotentialError, match="not a readable torch checkpoint"):
        get_potential(f"sevennet:{bad}").elements


def test_unpinned_full_pickle_warns_but_loads(tmp_path):
    copy = tmp_path / "my_checkpoint.pth"
    shutil.copy(sevennet_checkpoint(), copy)
    pot = get_potential(f"sevennet:{copy}")
    with pytest.warns(trust.UnsafeModelWarning, match="arbitrary code"):
        assert "Li" in pot.elements
    assert pot.model_trust["pinned"] is False and pot.model_trust["load"] == "full_unpickle"


def test_weights_only_checkpoint_does_not_warn(tmp_path):
    import torch

    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(3)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", trust.UnsafeModelWarning)
        info = trust.check_torch_file(path)
    assert info["load"] == "weights_only" and not info["pinned"]


def test_cli_with_a_corrupt_model_exits_2_and_keeps_nothing(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(sevennet_checkpoint().read_bytes()[:5000])
    result = subprocess.run([sys.executable, "-m", "harness.cli", "md", "Li3N", "--potential",
                             f"sevennet:{bad}", "--steps", "10", "--out", tmp_path / "run"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr
    assert "not a readable torch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
