# Preset: what every harness LAMMPS build needs (LAMMPS-style cache file, use with -C).
#
#   cmake -S <lammps>/cmake -B build -C cmake/presets/basic.cmake [-C ...more presets]
#
# The harness drives LAMMPS through its Python module (shared library, C++ exceptions are
# always on since LAMMPS 2 Aug 2023) and runs MPI domain decomposition; its MD inputs use
# core styles (nvt/npt, fix external, fix halt, pair zero, lj/cut) plus the packages
# below, which also match the PyPI wheel the project tests against.

set(ALL_PACKAGES
  EXTRA-COMPUTE
  EXTRA-DUMP
  EXTRA-FIX
  EXTRA-PAIR
  KSPACE
  MANYBODY
  MOLECULE
  RIGID)

foreach(PKG ${ALL_PACKAGES})
  set(PKG_${PKG} ON CACHE BOOL "" FORCE)
endforeach()

set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)    # the Python module loads liblammps.so
set(BUILD_MPI ON CACHE BOOL "" FORCE)
set(CMAKE_BUILD_TYPE Release CACHE STRING "" FORCE)
