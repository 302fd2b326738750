# Preset: KOKKOS with CUDA (and OpenMP on the host), for NVIDIA GPUs. Use with -C after
# basic.cmake. As in LAMMPS' own presets/kokkos-cuda.cmake the GPU architecture *must*
# match the hardware: it is not set here; pass it on the command line, e.g.
#   -D Kokkos_ARCH_HOPPER90=ON   (H100/H200; AMPERE80 A100, ADA89 L40S, BLACKWELL100 B200)
# tools/build_lammps.sh does that (--gpu-arch, or detected with nvidia-smi).
# Run with:  lmp -k on g 1 -sf kk -pk kokkos newton on neigh half  (ML-IAP/MACE: see the
# README section "Full LAMMPS build").

set(PKG_KOKKOS ON CACHE BOOL "" FORCE)
set(Kokkos_ENABLE_SERIAL ON CACHE BOOL "" FORCE)
set(Kokkos_ENABLE_OPENMP ON CACHE BOOL "" FORCE)
set(Kokkos_ENABLE_CUDA ON CACHE BOOL "" FORCE)
set(BUILD_OMP ON CACHE BOOL "" FORCE)
# KSPACE on the GPU uses cuFFT
set(FFT_KOKKOS "CUFFT" CACHE STRING "" FORCE)
set(Kokkos_ENABLE_DEPRECATION_WARNINGS OFF CACHE BOOL "" FORCE)

# nvcc_wrapper from the LAMMPS tree compiles Kokkos/CUDA code (-S <lammps>/cmake puts it at
# ../lib/kokkos/bin). Elsewhere (e.g. a syntax check) the compiler is left alone.
get_filename_component(NVCC_WRAPPER_CMD
  "${CMAKE_CURRENT_SOURCE_DIR}/../lib/kokkos/bin/nvcc_wrapper" ABSOLUTE)
if(EXISTS "${NVCC_WRAPPER_CMD}")
  set(CMAKE_CXX_COMPILER ${NVCC_WRAPPER_CMD} CACHE FILEPATH "" FORCE)
else()
  message(STATUS "kokkos-cuda preset: ${NVCC_WRAPPER_CMD} not found; CMAKE_CXX_COMPILER unchanged")
endif()
