#!/usr/bin/env bash
# Full LAMMPS build for HPC users: KOKKOS (CUDA), ML-IAP + PYTHON (`pair_style mliap unified`
# for MACE and other Python potentials), PLUGIN (our pair_style mace / e3gnn plugins), MPI,
# from a LAMMPS source tree you already have; then installs the LAMMPS Python module into
# the harness' virtual environment, replacing the PyPI wheel. The harness picks it up with
# no code change (`harness md --route auto` then finds the ML-IAP route; see potentials/routes.py).
#
# Usage:
#   tools/build_lammps.sh --lammps-src DIR [options]
#
# Options:
#   --lammps-src DIR     LAMMPS source tree (git clone -b stable https://github.com/lammps/lammps),
#                        22 Jul 2025 or newer (required)
#   --build-dir DIR      build directory (default: DIR/build-harness)
#   --python PY          Python of the venv to install into (default: $VIRTUAL_ENV/bin/python,
#                        else .venv/bin/python of this repository)
#   --gpu-arch ARCH      Kokkos architecture: HOPPER90 (H100/H200), AMPERE80 (A100), ADA89,
#                        BLACKWELL100, VOLTA70, ... or 'auto' (nvidia-smi; default)
#   --no-kokkos          CPU-only build (no KOKKOS/CUDA)
#   --no-mliap           without ML-IAP + PYTHON
#   --jobs N             parallel compile jobs (default: 4)
#   --configure-only     stop after `cmake` configure
#   --no-install         build, but do not install the Python module
#   --dry-run            print the commands, run nothing
#   -D VAR=VALUE         extra CMake cache entry (repeatable), e.g. -D PKG_OPENMP=ON
#   -h, --help           this text
#
# Steps run (print them with --dry-run):
#   1. cmake -S DIR/cmake -B BUILD -C cmake/presets/basic.cmake [-C kokkos-cuda.cmake]
#        [-C ml-iap-python.cmake] -C plugins.cmake -D Python3_EXECUTABLE=PY -D Kokkos_ARCH_X=ON
#   2. cmake --build BUILD --parallel N
#   3. cmake --build BUILD --target install-python    (pip-installs `lammps` into PY's venv)
#   4. PY -c "...": load the new module, print its packages, check the styles the routes need
#
# Before running: a C++17 compiler, CMake >= 3.20, an MPI library (mpicxx on PATH), CUDA
# toolkit for KOKKOS/CUDA, and `PY -m pip install cython` for ML-IAP's Python coupling.
# MPI: the new liblammps links the system MPI; rebuild mpi4py against it in the same venv
# (`PY -m pip install --force-reinstall --no-binary mpi4py mpi4py`) and remove the `mpich`
# wheel's MPI from that venv, or mpi4py and LAMMPS will disagree about MPI_COMM_WORLD.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PRESETS="$REPO_ROOT/cmake/presets"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }
die() { echo "build_lammps.sh: error: $*" >&2; exit 2; }

LAMMPS_SRC="" BUILD_DIR="" PYTHON="" GPU_ARCH="auto" KOKKOS=1 MLIAP=1 JOBS=4
CONFIGURE_ONLY=0 INSTALL=1 DRY_RUN=0
EXTRA_DEFS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --lammps-src) LAMMPS_SRC="${2:?--lammps-src needs a directory}"; shift 2 ;;
    --build-dir) BUILD_DIR="${2:?--build-dir needs a directory}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --gpu-arch) GPU_ARCH="${2:?--gpu-arch needs a Kokkos architecture or auto}"; shift 2 ;;
    --no-kokkos) KOKKOS=0; shift ;;
    --no-mliap) MLIAP=0; shift ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --configure-only) CONFIGURE_ONLY=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -D) EXTRA_DEFS+=("-D" "${2:?-D needs VAR=VALUE}"); shift 2 ;;
    -D*) EXTRA_DEFS+=("-D" "${1#-D}"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

[[ -n "$LAMMPS_SRC" ]] || die "--lammps-src DIR is required (a LAMMPS source tree)"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer, not '$JOBS'"
LAMMPS_SRC="$(cd "$LAMMPS_SRC" 2>/dev/null && pwd)" || die "no such directory: $LAMMPS_SRC"
[[ -f "$LAMMPS_SRC/cmake/CMakeLists.txt" ]] ||
  die "$LAMMPS_SRC is not a LAMMPS source tree (no cmake/CMakeLists.txt)"
BUILD_DIR="${BUILD_DIR:-$LAMMPS_SRC/build-harness}"

if [[ -z "$PYTHON" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
  else PYTHON="$REPO_ROOT/.venv/bin/python"; fi
fi
[[ -x "$PYTHON" ]] || die "Python '$PYTHON' not found; pass --python <venv>/bin/python"

# LAMMPS version: the harness needs 22 Jul 2025 or newer (harness/md/engine.py)
if [[ -f "$LAMMPS_SRC/src/version.h" ]]; then
  version_line="$(grep -m1 'LAMMPS_VERSION' "$LAMMPS_SRC/src/version.h" || true)"
  echo "# LAMMPS source: $LAMMPS_SRC (${version_line#*LAMMPS_VERSION })"
fi

PRESET_ARGS=(-C "$PRESETS/basic.cmake")
if [[ $KOKKOS == 1 ]]; then
  if [[ "$GPU_ARCH" == "auto" ]]; then
    cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .' || true)"
    case "$cap" in
      70) GPU_ARCH=VOLTA70 ;; 75) GPU_ARCH=TURING75 ;; 80) GPU_ARCH=AMPERE80 ;;
      86) GPU_ARCH=AMPERE86 ;; 89) GPU_ARCH=ADA89 ;; 90) GPU_ARCH=HOPPER90 ;;
      100) GPU_ARCH=BLACKWELL100 ;; 120) GPU_ARCH=BLACKWELL120 ;;
      "") die "cannot detect the GPU (nvidia-smi); pass --gpu-arch (e.g. HOPPER90) or --no-kokkos" ;;
      *) die "unknown compute capability '$cap'; pass --gpu-arch explicitly" ;;
    esac
    echo "# detected GPU architecture: $GPU_ARCH"
  fi
  [[ "$GPU_ARCH" =~ ^[A-Z]+[0-9]+$ ]] || die "--gpu-arch must look like HOPPER90, not '$GPU_ARCH'"
  PRESET_ARGS+=(-C "$PRESETS/kokkos-cuda.cmake")
fi
[[ $MLIAP == 1 ]] && PRESET_ARGS+=(-C "$PRESETS/ml-iap-python.cmake")
PRESET_ARGS+=(-C "$PRESETS/plugins.cmake")

CONFIGURE=(cmake -S "$LAMMPS_SRC/cmake" -B "$BUILD_DIR" "${PRESET_ARGS[@]}"
           -D "Python3_EXECUTABLE=$PYTHON")
[[ $KOKKOS == 1 ]] && CONFIGURE+=(-D "Kokkos_ARCH_${GPU_ARCH}=ON")
CONFIGURE+=("${EXTRA_DEFS[@]}")
BUILD=(cmake --build "$BUILD_DIR" --parallel "$JOBS")
INSTALL_PY=(cmake --build "$BUILD_DIR" --target install-python)
NEED="PLUGIN"
[[ $MLIAP == 1 ]] && NEED="$NEED ML-IAP PYTHON"
[[ $KOKKOS == 1 ]] && NEED="$NEED KOKKOS"
VERIFY=("$PYTHON" -c 'import sys, mpi4py.MPI; from lammps import lammps; lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"]); have = set(lmp.installed_packages); print("LAMMPS", lmp.version(), *sorted(have)); lmp.close(); missing = set(sys.argv[1:]) - have; sys.exit("missing packages: " + " ".join(sorted(missing)) if missing else 0)' $NEED)

run() {    # print the command (copy-pasteable), then run it unless --dry-run
  local arg line=""
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./=:+,@%-]+$ ]]; then line+="$arg "
    else line+="'${arg//\'/\'\\\'\'}' "; fi
  done
  echo "${line% }"
  [[ $DRY_RUN == 1 ]] || "$@"
}

[[ $DRY_RUN == 1 ]] && echo "# dry run: commands are printed, not run"
run "${CONFIGURE[@]}"
[[ $CONFIGURE_ONLY == 1 ]] && exit 0
run "${BUILD[@]}"
if [[ $INSTALL == 1 ]]; then
  run "${INSTALL_PY[@]}"
  run "${VERIFY[@]}"
fi
[[ $DRY_RUN == 1 ]] && exit 0
echo "# done: $PYTHON imports this LAMMPS now; the routes it offers:" \
     "$PYTHON -c 'import potentials.routes as r; print(r.lammps_capabilities().mliap_detail())'"
