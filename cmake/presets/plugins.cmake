# Preset: the PLUGIN package, so `plugin load` can add the harness' own pair styles
# (cmake/plugins: pair_style mace, pair_style e3gnn) to this build. Use with -C after
# basic.cmake. Plugins must be compiled against the headers of the same LAMMPS version.

set(PKG_PLUGIN ON CACHE BOOL "" FORCE)
set(BUILD_SHARED_LIBS ON CACHE BOOL "" FORCE)
