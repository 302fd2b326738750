/* ----------------------------------------------------------------------
   pair_style e3gnn/parallel as a LAMMPS plugin (iontransport-harness).
   Port of SevenNet's pair_e3gnn_parallel.cpp (sevenn 0.13.0, MIT, Yutack Park, SNU);
   see pair_e3gnn_parallel_plugin.h for what changed and why.

   One step on one rank:
   1. graph: nodes = local atoms + ghost atoms within the model cutoff of a local atom,
      merged by atom tag (periodic images of one atom are one node; an image of a local
      atom is that local node); edges i -> j for local i only, with the real
      (image-resolved) edge vectors;
   2. module 0 embeds the node types; before each later module the ghost nodes' features
      are filled from their owners by one forward communication (one layer of halo);
   3. backward, module by module in reverse: the gradient w.r.t. ghost-node features is
      sent back to the owners by one reverse communication and added to the gradient of
      their local features, which then seeds the backward pass of the module before;
   4. forces from dE/d(edge vector) (ghost-node forces go home with LAMMPS' force reverse
      communication, newton on), virial W = -sum_edges r (x) dE/dr, energy = sum over
      local nodes.
------------------------------------------------------------------------- */

#include "pair_e3gnn_parallel_plugin.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neigh_request.h"
#include "neighbor.h"
#include "utils.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include <mpi.h>

#include <cstring>
#include <filesystem>
#include <list>
#include <string>
#include <unordered_map>

using namespace LAMMPS_NS;

// body in sevenn's pair_e3gnn_oeq_autograd.cpp (compiled into this plugin): registers the
// autograd of OpenEquivariance kernels for models deployed with oeq
extern void pair_e3gnn_oeq_register_autograd();

namespace {
const auto INT64 = torch::TensorOptions().dtype(torch::kInt64);
const auto FLOAT32 = torch::TensorOptions().dtype(torch::kFloat);

// an owning copy (from_blob of an empty std::vector would see a null pointer)
torch::Tensor copy_of(const std::vector<int64_t> &v)
{
  auto t = torch::empty({static_cast<int64_t>(v.size())}, INT64);
  if (!v.empty()) std::memcpy(t.data_ptr<int64_t>(), v.data(), v.size() * sizeof(int64_t));
  return t;
}
}    // namespace

/* ---------------------------------------------------------------------- */

PairE3GNNParallelPlugin::PairE3GNNParallelPlugin(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the virial comes from per-edge gradients
  centroidstressflag = CENTROID_NOTAVAIL;
  comm_forward = 0;
  comm_reverse = 0;
}

PairE3GNNParallelPlugin::~PairE3GNNParallelPlugin()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(map);
  }
}

void PairE3GNNParallelPlugin::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(map, n + 1, "pair:map");
  for (int i = 0; i <= n; i++) {
    map[i] = -1;
    for (int j = 0; j <= n; j++) setflag[i][j] = 0;
  }
}

/* ----------------------------------------------------------------------
   pair_style e3gnn/parallel [device auto|cpu|cuda]
------------------------------------------------------------------------- */

void PairE3GNNParallelPlugin::settings(int narg, char **arg)
{
  int iarg = 0;
  while (iarg < narg) {
    if (strcmp(arg[iarg], "device") == 0 && iarg + 1 < narg) {
      device_request = arg[iarg + 1];
      if (device_request != "auto" && device_request != "cpu" && device_request != "cuda")
        error->all(FLERR, "pair_style e3gnn/parallel: unknown device '{}' (auto, cpu or cuda)",
                   device_request);
      iarg += 2;
    } else {
      error->all(FLERR, "Illegal pair_style e3gnn/parallel option '{}'; syntax: pair_style "
                        "e3gnn/parallel [device auto|cpu|cuda]", arg[iarg]);
    }
  }
}

void PairE3GNNParallelPlugin::choose_device()
{
  bool cuda = false;
  if (device_request == "cuda") {
    if (!torch::cuda::is_available())
      error->all(FLERR, "pair_style e3gnn/parallel: device cuda requested but this libtorch "
                        "sees no CUDA device (CPU-only torch wheel or no GPU visible)");
    cuda = true;
  } else if (device_request == "auto") {
    cuda = torch::cuda::is_available();
  }
  if (!cuda) {
    device = torch::kCPU;
  } else {
    // share the node's GPUs round-robin by node-local rank
    MPI_Comm shared;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &shared);
    int local_rank = 0;
    MPI_Comm_rank(shared, &local_rank);
    MPI_Comm_free(&shared);
    const int ndev = static_cast<int>(torch::cuda::device_count());
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % ndev));
  }
  if (comm->me == 0)
    utils::logmesg(lmp, "e3gnn/parallel: device {} (features exchanged through host memory)\n",
                   device.str());
}

/* ----------------------------------------------------------------------
   pair_coeff * * <n_modules> <directory | file_0 ... file_n-1> <element per type>
------------------------------------------------------------------------- */

void PairE3GNNParallelPlugin::coeff(int narg, char **arg)
{
  if (allocated) error->all(FLERR, "pair_coeff for e3gnn/parallel given twice");
  if (narg < 4) error->all(FLERR, "pair_coeff * * <n_modules> <model dir> <elements...>");
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "e3gnn/parallel: the first two pair_coeff arguments must be * *");
  allocate();
  choose_device();

  std::unordered_map<std::string, std::string> meta = {
      {"chemical_symbols_to_index", ""}, {"cutoff", ""}, {"num_species", ""},
      {"model_type", ""}, {"version", ""}, {"dtype", ""}, {"time", ""},
      {"flashTP", "version mismatch"}, {"oeq", "version mismatch"}, {"comm_size", ""}};

  const int n_model = utils::inumeric(FLERR, arg[2], false, lmp);
  if (n_model < 2) error->all(FLERR, "e3gnn/parallel needs at least 2 model modules, got {}",
                              n_model);
  int chem_arg = 4;
  std::vector<std::string> files;
  if (std::filesystem::is_directory(arg[3])) {
    for (int i = 0; i < n_model; i++)
      files.push_back(std::string(arg[3]) + "/deployed_parallel_" + std::to_string(i) + ".pt");
  } else {
    if (narg < 3 + n_model) error->all(FLERR, "e3gnn/parallel: expected {} model files", n_model);
    for (int i = 0; i < n_model; i++) files.emplace_back(arg[3 + i]);
    chem_arg = 3 + n_model;
  }
  for (const auto &file : files) {
    if (!std::filesystem::is_regular_file(file))
      error->all(FLERR, "e3gnn/parallel: model file {} not found (deploy with "
                        "sevenn.scripts.deploy.deploy_parallel)", file);
    try {
      model_list.push_back(torch::jit::load(file, device, meta));
    } catch (const std::exception &e) {
      error->all(FLERR, "e3gnn/parallel: cannot load {}: {}", file, e.what());
    }
  }
  // as upstream: no profiling executor (shapes change every step)
  torch::jit::setGraphExecutorOptimize(false);
  torch::jit::FusionStrategy strategy = {{torch::jit::FusionBehavior::STATIC, 0}};
  torch::jit::setFusionStrategy(strategy);

  if (meta["model_type"] != "E3_equivariant_model")
    error->all(FLERR, "e3gnn/parallel: model type '{}' is not E3_equivariant_model",
               meta["model_type"]);
  if (meta["comm_size"].empty())
    error->all(FLERR, "e3gnn/parallel: {} has no comm_size: not a deploy_parallel model",
               files.front());
  cutoff = std::stod(meta["cutoff"]);
  cutoff_square = cutoff * cutoff;
  comm_size = std::stoi(meta["comm_size"]);
  comm_forward = comm_size;
  comm_reverse = comm_size;
  if (meta["oeq"] == "yes") pair_e3gnn_oeq_register_autograd();

  std::vector<std::string> species;
  {
    std::string chem = meta["chemical_symbols_to_index"];
    size_t pos = 0;
    while (pos < chem.size()) {
      size_t end = chem.find(' ', pos);
      if (end == std::string::npos) end = chem.size();
      if (end > pos) species.push_back(chem.substr(pos, end - pos));
      pos = end + 1;
    }
  }
  const int ntypes = atom->ntypes;
  if (narg - chem_arg != ntypes)
    error->all(FLERR, "e3gnn/parallel: pair_coeff needs one element per atom type ({} types, "
                      "{} given)", ntypes, narg - chem_arg);
  for (int itype = 1; itype <= ntypes; itype++) {
    const std::string el = arg[chem_arg + itype - 1];
    for (size_t k = 0; k < species.size(); k++)
      if (species[k] == el) map[itype] = static_cast<int>(k);
    if (map[itype] < 0)
      error->all(FLERR, "e3gnn/parallel: element {} (type {}) is not covered by the model ({})",
                 el, itype, meta["chemical_symbols_to_index"]);
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = 1; j <= ntypes; j++) {
      setflag[i][j] = 1;
      cutsq[i][j] = cutoff_square;
    }
  if (comm->me == 0)
    utils::logmesg(lmp, "e3gnn/parallel: {} modules, sevenn {}, {} precision, cutoff {} A, "
                        "comm_size {}\n", n_model, meta["version"], meta["dtype"], cutoff,
                   comm_size);
}

void PairE3GNNParallelPlugin::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style e3gnn/parallel requires newton pair on");
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style e3gnn/parallel requires atom IDs");
  neighbor->add_request(this, NeighConst::REQ_FULL);
}

double PairE3GNNParallelPlugin::init_one(int, int)
{
  return cutoff;
}

/* ----------------------------------------------------------------------
   ghost-feature exchange through LAMMPS' stock pair communication
------------------------------------------------------------------------- */

torch::Tensor PairE3GNNParallelPlugin::gather_ghost_features(const torch::Tensor &x_local)
{
  const int nall = atom->nlocal + atom->nghost;
  x_dim = static_cast<int>(x_local.size(1));
  if (x_dim > comm_size)
    error->one(FLERR, "e3gnn/parallel: feature length {} exceeds the model's comm_size {}",
               x_dim, comm_size);
  rows = torch::zeros({nall, x_dim}, FLOAT32);
  rows.index_copy_(0, local_atom_index, x_local.to(torch::kCPU, torch::kFloat).contiguous());
  comm->forward_comm(this, x_dim);
  return rows.index_select(0, ghost_atom_index);
}

torch::Tensor PairE3GNNParallelPlugin::reverse_ghost_gradients(const torch::Tensor &ghost_grad)
{
  const int nall = atom->nlocal + atom->nghost;
  x_dim = static_cast<int>(ghost_grad.size(1));
  rows = torch::zeros({nall, x_dim}, FLOAT32);
  rows.index_copy_(0, ghost_atom_index, ghost_grad.to(torch::kCPU, torch::kFloat).contiguous());
  comm->reverse_comm(this, x_dim);
  return rows.index_select(0, local_atom_index);
}

int PairE3GNNParallelPlugin::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const float *r = rows.data_ptr<float>();
  int m = 0;
  for (int k = 0; k < n; k++) {
    const float *src = r + static_cast<int64_t>(list[k]) * x_dim;
    for (int d = 0; d < x_dim; d++) buf[m++] = src[d];
  }
  return m;
}

void PairE3GNNParallelPlugin::unpack_forward_comm(int n, int first, double *buf)
{
  float *r = rows.data_ptr<float>();
  int m = 0;
  for (int i = first; i < first + n; i++) {
    float *dst = r + static_cast<int64_t>(i) * x_dim;
    for (int d = 0; d < x_dim; d++) dst[d] = static_cast<float>(buf[m++]);
  }
}

int PairE3GNNParallelPlugin::pack_reverse_comm(int n, int first, double *buf)
{
  const float *r = rows.data_ptr<float>();
  int m = 0;
  for (int i = first; i < first + n; i++) {
    const float *src = r + static_cast<int64_t>(i) * x_dim;
    for (int d = 0; d < x_dim; d++) buf[m++] = src[d];
  }
  return m;
}

void PairE3GNNParallelPlugin::unpack_reverse_comm(int n, int *list, double *buf)
{
  float *r = rows.data_ptr<float>();
  int m = 0;
  for (int k = 0; k < n; k++) {
    float *dst = r + static_cast<int64_t>(list[k]) * x_dim;
    for (int d = 0; d < x_dim; d++) dst[d] += static_cast<float>(buf[m++]);
  }
}

/* ---------------------------------------------------------------------- */

void PairE3GNNParallelPlugin::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR, "pair_style e3gnn/parallel does not compute per-atom virials");

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const int nall = atom->nlocal + atom->nghost;
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  // -- graph ------------------------------------------------------------------------------
  tagint maxtag = 0;
  for (int i = 0; i < nall; i++) maxtag = std::max(maxtag, tag[i]);
  std::vector<int> tag_to_graph(static_cast<size_t>(maxtag) + 1, -1);
  std::vector<int64_t> node_type(inum), node_type_ghost, local_atoms(inum), ghost_atoms;
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    tag_to_graph[tag[i]] = ii;
    local_atoms[ii] = i;
    node_type[ii] = map[type[i]];
  }
  int graph_size = inum;
  std::vector<int64_t> edge_src, edge_dst;
  std::vector<float> edge_vec;
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int *jlist = firstneigh[i];
    for (int jj = 0; jj < numneigh[i]; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double del[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
      if (del[0] * del[0] + del[1] * del[1] + del[2] * del[2] >= cutoff_square) continue;
      int &g = tag_to_graph[tag[j]];
      if (g < 0) {    // a ghost atom inside the cutoff, first seen
        g = graph_size++;
        ghost_atoms.push_back(j);
        node_type_ghost.push_back(map[type[j]]);
      }
      edge_src.push_back(ii);
      edge_dst.push_back(g);
      edge_vec.insert(edge_vec.end(), {static_cast<float>(del[0]), static_cast<float>(del[1]),
                                       static_cast<float>(del[2])});
    }
  }
  const int64_t nedges = static_cast<int64_t>(edge_src.size());
  local_atom_index = copy_of(local_atoms);
  ghost_atom_index = copy_of(ghost_atoms);

  auto src_t = copy_of(edge_src);
  auto dst_t = copy_of(edge_dst);
  auto vec_t = torch::empty({nedges, 3}, FLOAT32);
  if (nedges > 0) std::memcpy(vec_t.data_ptr<float>(), edge_vec.data(), edge_vec.size() * sizeof(float));
  int64_t num_nodes[1] = {inum};
  auto num_atoms = torch::from_blob(num_nodes, {1}, INT64);

  torch::Dict<std::string, torch::Tensor> input;
  input.insert("x", copy_of(node_type).to(device));
  input.insert("x_ghost", copy_of(node_type_ghost).to(device));
  input.insert("edge_index", torch::stack({src_t, dst_t}).to(device));
  input.insert("edge_vec", vec_t.to(device).detach().requires_grad_(true));
  input.insert("num_atoms", num_atoms.to(device));
  input.insert("nlocal", num_atoms.clone());

  // -- forward, module by module --------------------------------------------------------
  std::list<std::vector<torch::Tensor>> wrt_tensors;
  wrt_tensors.push_back({input.at("edge_vec")});
  auto output = model_list.front().forward({input}).toGenericDict();
  for (size_t k = 1; k < model_list.size(); k++) {
    auto x_local = output.at("x").toTensor().detach();
    auto x_ghost = gather_ghost_features(x_local).to(device).requires_grad_(true);
    output.insert_or_assign("x_ghost", x_ghost);
    // a fresh edge_vec leaf per module keeps each module's dE/dr separate (as upstream)
    output.insert_or_assign("edge_vec", output.at("edge_vec").toTensor().clone());
    wrt_tensors.push_back({output.at("edge_vec").toTensor(), output.at("x").toTensor(),
                           output.at("self_cont_tmp").toTensor(), x_ghost});
    output = model_list[k].forward({output}).toGenericDict();
  }
  torch::Tensor energy = output.at("inferred_total_energy").toTensor().squeeze();

  // -- backward, module by module in reverse ---------------------------------------------
  torch::Tensor dE_dr = torch::zeros({nedges, 3}, FLOAT32.device(device));
  std::vector<torch::Tensor> of_tensor, grad_outputs;
  for (auto rit = wrt_tensors.rbegin(); rit != wrt_tensors.rend(); ++rit) {
    const auto &wrt = *rit;
    std::vector<torch::Tensor> grads = (rit == wrt_tensors.rbegin())
        ? torch::autograd::grad({energy}, wrt)
        : torch::autograd::grad(of_tensor, wrt, grad_outputs);
    dE_dr = dE_dr + grads.at(0);
    if (std::next(rit) == wrt_tensors.rend()) break;    // module 0: only edge vectors
    // complete dE/dx_local with what other ranks' ghost copies of my atoms contributed
    auto x_local_grad = grads.at(1).detach() +
        reverse_ghost_gradients(grads.at(3).detach()).to(device);
    of_tensor = {wrt.at(1), wrt.at(2)};
    grad_outputs = {x_local_grad, grads.at(2)};
  }

  // -- energy, forces, virial -------------------------------------------------------------
  if (eflag_global) eng_vdwl += energy.item<float>();
  dE_dr = dE_dr.to(torch::kCPU);
  auto force = torch::zeros({graph_size, 3}, FLOAT32);
  force.index_add_(0, src_t, dE_dr);
  force.index_add_(0, dst_t, -dE_dr);
  auto fa = force.accessor<float, 2>();
  for (int g = 0; g < graph_size; g++) {
    const int i = g < inum ? local_atoms[g] : ghost_atoms[g - inum];
    f[i][0] += fa[g][0];
    f[i][1] += fa[g][1];
    f[i][2] += fa[g][2];
  }
  if (vflag_global && nedges > 0) {
    // W = -sum_e r_e (x) dE/dr_e, Voigt xx yy zz xy xz yz
    auto r = vec_t;
    auto w = torch::stack({r.select(1, 0) * dE_dr.select(1, 0), r.select(1, 1) * dE_dr.select(1, 1),
                           r.select(1, 2) * dE_dr.select(1, 2), r.select(1, 0) * dE_dr.select(1, 1),
                           r.select(1, 2) * dE_dr.select(1, 0), r.select(1, 1) * dE_dr.select(1, 2)},
                          1).sum(0).neg();
    auto wa = w.accessor<float, 1>();
    for (int k = 0; k < 6; k++) virial[k] += wa[k];
  }
  if (eflag_atom) {
    auto e_atom = output.at("atomic_energy").toTensor().to(torch::kCPU).view({inum});
    auto ea = e_atom.accessor<float, 1>();
    for (int g = 0; g < inum; g++) eatom[local_atoms[g]] += ea[g];
  }
  rows = torch::Tensor();
}
