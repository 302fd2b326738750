/* -*- c++ -*- -------------------------------------------------------------
   pair_style mace: a MACE TorchScript export (mace-torch's LAMMPS export, the
   LAMMPS_MACE wrapper) evaluated inside LAMMPS, built as a LAMMPS plugin.

   Syntax
     pair_style mace [domain_decomposition | no_domain_decomposition | parallel]
                     [layers model-lammps-layers.pt] [device auto|cpu|cuda]
     pair_coeff * * model-lammps.pt El_1 El_2 ... El_ntypes

   Graph modes
     no_domain_decomposition  nodes = local atoms; a ghost neighbour j becomes an edge to its
                              owner map(tag[j]) with Cartesian shift x[j] - x[owner]. One MPI
                              rank only; needs an atom map (atom_modify map array|hash|yes).
     domain_decomposition     nodes = local + ghost atoms, edges from a full neighbour list
                              with ghost neighbours (REQ_FULL | REQ_GHOST), zero shifts; only
                              local node energies are summed; forces land on ghosts too and
                              LAMMPS reverse-communicates them (newton_pair on). The ghost
                              shell is raised to num_interactions * r_max + skin so that every
                              local energy sees a complete receptive field.
     parallel                 message passing across ranks with one-layer halos (needs the
                              per-layer file, `layers FILE`, written by potentials/mace_layers.py
                              / harness export mace). Nodes = local atoms + the ghosts within
                              r_max of one (ghost cutoff r_max + skin, LAMMPS' default), edges
                              sender -> receiver with every receiver local. The model runs
                              layer by layer; between layers the ghosts' node features are
                              copied from their owners (comm->forward_comm(this)); the backward
                              pass runs layer by layer in reverse, and the gradient of this
                              rank's energy with respect to its ghost features is summed onto
                              the owners (comm->reverse_comm(this)) before the owners' layer is
                              differentiated. Forces on ghosts: LAMMPS' reverse comm (newton
                              on). Cost per rank ~ its local atoms. Multi-hop halos (a
                              subdomain thinner than the ghost cutoff) use LAMMPS' brick comm
                              with several swaps per dimension.
     default                  parallel on several ranks when a layers file is given;
                              no_domain_decomposition on one rank with an atom map; else
                              domain_decomposition.

   Evaluation: the export's inner `model` (ScaleShiftMACE/MACE) is called exactly as
   LAMMPS_MACE.forward calls it (head from the export, compute_force=False); then
   E_local = sum(node_energy * local_mask) is differentiated with autograd with respect to
   `positions` (forces) and, when LAMMPS asks for a virial, the per-edge `shifts`, whose
   gradient is dE/d(edge vector). Global virial W = -sum_e r_e (x) dE/dr_e (symmetrised);
   per-atom virial: each edge's W_e split half/half between its two atoms (the convention
   of pair styles and of mace-torch's atomic virials), so it sums to the global virial.
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_MACE_PLUGIN_H
#define LMP_PAIR_MACE_PLUGIN_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMACEPlugin : public Pair {
 public:
  PairMACEPlugin(class LAMMPS *);
  ~PairMACEPlugin() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  void finish() override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 protected:
  enum class Mode { AUTO, DOMAIN_DECOMPOSITION, NO_DOMAIN_DECOMPOSITION, PARALLEL };
  enum class DeviceChoice { AUTO, CPU, CUDA };

  Mode mode_requested = Mode::AUTO;
  Mode mode = Mode::NO_DOMAIN_DECOMPOSITION;    // resolved in init_style()
  DeviceChoice device_choice = DeviceChoice::AUTO;

  bool model_loaded = false;
  torch::jit::Module wrapper;    // the LAMMPS_MACE export
  torch::jit::Module model;      // wrapper.model (ScaleShiftMACE / MACE)
  torch::Tensor head;            // wrapper.head (index of the head to evaluate)
  c10::Device device = c10::Device(torch::kCPU);
  torch::ScalarType dtype = torch::kFloat64;

  std::string model_file;
  double r_max = 0.0;
  int num_interactions = 0;
  std::vector<int64_t> model_numbers;    // atomic numbers, in the model's one-hot order
  std::vector<int> type_species;         // LAMMPS type (1-based) -> model species index

  double cutghost_set = -1.0;    // the comm cutoff this style set (domain decomposition)
  double cutghost_user = 0.0;    // the user's own comm_modify cutoff

  // parallel mode: the per-layer export
  std::string layers_file;          // from `pair_style mace ... layers FILE`
  std::string layers_loaded_file;   // the file layers_module holds
  bool layers_loaded = false;
  torch::jit::Module layers_module;
  std::vector<torch::jit::Module> layer_modules;
  std::vector<int> feature_widths;    // width of h after embed and after each layer
  int comm_width = 0;                 // feature width of the exchange in progress
  std::vector<double> feat_buf, grad_buf;    // nall x width, exchanged by forward/reverse comm
  std::vector<int> node_atom;                // node -> LAMMPS atom index
  std::vector<int> atom_node;                // atom -> node (-1: not a node)
  double time_model = 0.0, time_comm = 0.0;  // seconds, parallel mode
  long n_compute = 0;

  void load_layers();
  void compute_parallel();

  // per-step buffers (reused to avoid reallocation)
  std::vector<double> pos_buf, shift_buf, vec_buf, attr_buf, mask_buf;
  std::vector<int64_t> edge_buf;

  void allocate();
  void select_device();
  Mode resolve_mode();
};

}    // namespace LAMMPS_NS

#endif
