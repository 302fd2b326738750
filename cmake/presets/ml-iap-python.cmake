# Preset: ML-IAP with its Python coupling, i.e. `pair_style mliap unified` as used by
# mace-torch (LAMMPS_MLIAP_MACE, `mace_create_lammps_model --format=mliap`) and other
# Python ML potentials. Use with -C after basic.cmake (and kokkos-cuda.cmake for GPUs).
#
# Needs Cython in the Python that CMake finds: pass -D Python3_EXECUTABLE=<venv>/bin/python
# (tools/build_lammps.sh does), and `pip install cython` there first.

set(PKG_ML-IAP ON CACHE BOOL "" FORCE)
set(PKG_ML-SNAP ON CACHE BOOL "" FORCE)        # ML-IAP's descriptors come from ML-SNAP
set(PKG_PYTHON ON CACHE BOOL "" FORCE)
set(MLIAP_ENABLE_PYTHON ON CACHE BOOL "" FORCE)
set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)  # the embedded interpreter imports the module
