// Plugin entry point registering `pair_style mace` (pair_mace.cpp) with LAMMPS.

#include "lammpsplugin.h"

#include "pair_mace.h"

using namespace LAMMPS_NS;

static Pair *mace_creator(LAMMPS *lmp)
{
  return new PairMACEPlugin(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = (lammpsplugin_regfunc) regfunc;

  plugin.version = HARNESS_LAMMPS_VERSION_STRING;
  plugin.style = "pair";
  plugin.name = "mace";
  plugin.info = "MACE TorchScript (mace-torch LAMMPS export) pair style, domain decomposition";
  plugin.author = "iontransport-harness";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &mace_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
