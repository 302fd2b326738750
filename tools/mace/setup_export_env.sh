#!/usr/bin/env bash
# Create the mace-torch environment used by `harness export mace` (and by
# tools/mace/make_tiny_model.sh). It is separate from the main environment because
# mace-torch 0.3.16 pins e3nn==0.4.4 while SevenNet needs e3nn>=0.5.
#
#   bash tools/mace/setup_export_env.sh [ENV_DIR]     # default: <repo>/.venv-mace
#
# Another location works too: point the harness at it with
#   export IONTRANSPORT_MACE_PYTHON=ENV_DIR/bin/python
# torch is pinned to 2.13.0 (the CPU wheel the main environment uses; other specs pull
# multi-GB CUDA wheels).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
env_dir="${1:-$repo/.venv-mace}"
python="${PYTHON:-python3}"

if [[ ! -x "$env_dir/bin/python" ]]; then
    "$python" -m venv "$env_dir"
fi
"$env_dir/bin/pip" install -c <(echo torch==2.13.0) torch==2.13.0 mace-torch==0.3.16
"$env_dir/bin/python" -c "import mace, e3nn, torch; print('mace-torch export env ready:', torch.__version__, 'e3nn', e3nn.__version__)"
echo "interpreter: $env_dir/bin/python"
