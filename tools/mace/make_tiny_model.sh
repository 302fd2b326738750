#!/usr/bin/env bash
# Rebuild the tiny Li-P-S-Cl MACE test model and everything the tests compare against:
#   potentials/data/mace-tiny-LiPSCl.model        (mace-torch pickle, < 1 MB)
#   potentials/data/mace-tiny-LiPSCl-lammps.pt    (TorchScript export the harness runs)
#   potentials/data/mace-tiny-LiPSCl.json         (provenance: hyper-parameters, versions, sha256)
#   tests/data/mace-tiny-reference.json           (mace-torch MACECalculator values on 3 cells)
#
#   bash tools/mace/make_tiny_model.sh [WORK_DIR]   # default WORK_DIR: build/mace-tiny
#
# Needs the main venv (.venv, for SevenNet-0 labels and the export driver) and the
# mace-torch venv (.venv-mace; created by setup_export_env.sh when missing). Offline.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
main_py="${MAIN_PYTHON:-$repo/.venv/bin/python}"
mace_py="${IONTRANSPORT_MACE_PYTHON:-$repo/.venv-mace/bin/python}"
work="$(realpath -m "${1:-$repo/build/mace-tiny}")"
tool="$repo/tools/mace/make_tiny_model.py"
stem=mace-tiny-LiPSCl

[[ -x "$mace_py" ]] || bash "$repo/tools/mace/setup_export_env.sh"
mkdir -p "$work"
cd "$repo"

# 1. labels (main venv, SevenNet-0); reused when present
[[ -f "$work/frames.extxyz" ]] || "$main_py" "$tool" frames --out "$work/frames.extxyz"
# 2. train (mace-torch venv)
rm -rf "$work/train"
"$mace_py" "$tool" train --frames "$work/frames.extxyz" --work-dir "$work/train"
cp "$work/train/$stem.model" "potentials/data/$stem.model"
# 3. export through the harness' own export path (runs .venv-mace in a subprocess)
IONTRANSPORT_MACE_PYTHON="$mace_py" "$main_py" -c \
    "from harness.export import export_mace; print(export_mace(model='potentials/data/$stem.model'))"
# 4. mace-torch reference values (mace-torch venv)
"$mace_py" "$tool" reference --model "potentials/data/$stem.model"
# 5. provenance
versions="$("$mace_py" -c 'from importlib.metadata import version as v; print(v("mace-torch"), v("torch"), v("e3nn"))')"
read -r mace_v torch_v e3nn_v <<<"$versions"
"$main_py" "$tool" provenance --frames "$work/frames.extxyz" --work-dir "$work/train" \
    --mace-version "$mace_v" --torch-version "$torch_v" --e3nn-version "$e3nn_v"
ls -l potentials/data/ tests/data/mace-tiny-reference.json
