// Plugin entry point registering SevenNet's serial `pair_style e3gnn` with LAMMPS.
// The pair style itself is compiled unchanged from the sevenn wheel (pair_e3gnn.cpp).

#include "lammpsplugin.h"

#include "pair_e3gnn.h"

using namespace LAMMPS_NS;

static Pair *e3gnn_creator(LAMMPS *lmp)
{
  return new PairE3GNN(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  plugin.version = HARNESS_LAMMPS_VERSION_STRING;
  plugin.style = "pair";
  plugin.name = "e3gnn";
  plugin.info = "SevenNet e3gnn pair style (serial), sevenn wheel sources";
  plugin.author = "Yutack Park (SNU); plugin glue: iontransport-harness";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
