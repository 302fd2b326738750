"""Split a MACE LAMMPS export into per-layer TorchScript modules for ``pair_style mace``'s
``parallel`` mode (message passing across MPI ranks with one-layer ghost halos).

Why: in domain decomposition every rank that evaluates the *whole* model needs ghosts out to
``num_interactions * r_max`` (every local energy must see its full receptive field), so a rank
with 208 local atoms evaluates the model on ~2,700 nodes. Evaluated layer by layer, a rank
needs ghosts within one ``r_max`` only: after each layer the ghost atoms' node features are
copied from their owners (LAMMPS forward communication), and in the backward pass the
gradients with respect to ghost features are summed back onto the owners (reverse
communication). This module writes the pieces the plugin runs between those exchanges.

The file ``X-lammps-layers.pt`` (beside ``X-lammps.pt``, or in the harness cache for a
shipped model) is one TorchScript module with:

* ``embed(node_attrs) -> (h0, e0)``: the layer-0 node features (species embedding, no
  position dependence, so ghosts compute their own) and the constant per-node energy
  ``E0[species] + shift``;
* ``layer<i>(node_attrs, node_feats, vectors, edge_index, n_local) -> (h, e)`` for each
  interaction ``i``: edges point sender -> receiver with every receiver local
  (``< n_local``) and ``vectors = x[receiver] - x[sender]``; ``h`` are the local atoms'
  features after interaction + product ``i``, ``e = scale * readout_i(h)`` their energy
  contributions. ``node_feats`` covers local then ghost nodes.
* attributes ``r_max``, ``num_interactions``, ``atomic_numbers``, ``feature_widths``
  (width of ``h`` after embed and after each layer) and ``source_sha256`` (of the export).

Per-atom energy = ``e0 + sum_i e_i`` equals the whole model's ``node_energy``. The modules
are built from the export's own scripted submodules (no mace-torch import), so this runs in
the main environment. Supported: MACE / ScaleShiftMACE exports whose interaction blocks
take ``(node_attrs, node_feats, edge_attrs, edge_feats, edge_index, cutoff)`` and return
``(message, sc)`` (mace-torch 0.3.x RealAgnostic* blocks); anything else is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

from potentials.base import PotentialError, sha256_file

#: bump when the layer modules change (part of the cache key of generated files)
LAYERS_FORMAT = 1


def layers_path_for(export_file: str | Path) -> Path:
    """``X-lammps.pt`` -> ``X-lammps-layers.pt`` (same folder)."""
    path = Path(export_file)
    return path.with_name(path.name.removesuffix(".pt") + "-layers.pt")


def _build(export: Any, sliced: bool = True) -> Any:
    """The scripted per-layer container for a loaded LAMMPS_MACE export."""
    import torch
    from torch import nn

    model = export.model
    kinds = {name for name, _ in model.named_children()}
    needed = {"node_embedding", "radial_embedding", "spherical_harmonics",
              "atomic_energies_fn", "interactions", "products", "readouts"}
    if not needed <= kinds:
        raise PotentialError(f"MACE export lacks {sorted(needed - kinds)}; cannot split it "
                             "into layers (pair_style mace parallel mode)")
    n_layers = int(export.num_interactions)
    interactions = [getattr(model.interactions, str(i)) for i in range(n_layers)]
    for block in interactions:
        name = block.original_name
        if not name.startswith("RealAgnostic"):
            raise PotentialError(f"MACE interaction block {name} is not supported by the "
                                 "per-layer split; use one MPI rank (whole-model mode)")
    params = [p for p in export.parameters() if p.is_floating_point()]
    dtype = params[0].dtype if params else torch.float64
    head = int(export.head.reshape(-1)[0])
    if hasattr(model, "scale_shift"):
        scale = torch.atleast_1d(model.scale_shift.scale.detach()).to(dtype)[head].reshape(1)
        shift = torch.atleast_1d(model.scale_shift.shift.detach()).to(dtype)[head].reshape(1)
    else:
        scale = torch.ones(1, dtype=dtype)
        shift = torch.zeros(1, dtype=dtype)

    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.node_embedding = model.node_embedding
            self.atomic_energies_fn = model.atomic_energies_fn
            self.register_buffer("shift", shift.clone())
            self.head = head

        def forward(self, node_attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            feats = self.node_embedding(node_attrs)
            e0 = self.atomic_energies_fn(node_attrs)[:, self.head]
            return feats, e0.to(feats.dtype) + self.shift

    class Layer(nn.Module):
        def __init__(self, index: int) -> None:
            super().__init__()
            block = interactions[index]
            self.spherical_harmonics = model.spherical_harmonics
            self.radial_embedding = model.radial_embedding
            self.interaction = block
            self.product = getattr(model.products, str(index))
            self.readout = getattr(model.readouts, str(index))
            self.register_buffer("atomic_numbers", model.atomic_numbers.clone())
            self.register_buffer("scale", scale.clone())
            self.head = head
            # sliced: node-wise work of the interaction on local atoms only (ghosts only
            # need linear_up, as message senders); generic: the block's own forward on
            # every node, then the local rows (any block class with this signature)
            self.kind = (1 if block.original_name == "RealAgnosticInteractionBlock"
                         else 2 if block.original_name == "RealAgnosticResidualInteractionBlock"
                         else 0) if sliced else 0
            self.avg_num_neighbors = float(block.avg_num_neighbors) if self.kind else 1.0

        def forward(self, node_attrs: torch.Tensor, node_feats: torch.Tensor,
                    vectors: torch.Tensor, edge_index: torch.Tensor,
                    n_local: int) -> tuple[torch.Tensor, torch.Tensor]:
            lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)
            edge_attrs = self.spherical_harmonics(vectors)
            edge_feats, cutoff = self.radial_embedding(lengths, node_attrs, edge_index,
                                                       self.atomic_numbers)
            local_attrs = node_attrs[:n_local]
            if self.kind == 0:
                message, sc = self.interaction(node_attrs, node_feats, edge_attrs, edge_feats,
                                               edge_index, cutoff)
                message = message[:n_local]
                if sc is not None:
                    sc = sc[:n_local]
            else:
                block = self.interaction
                sc: Optional[torch.Tensor] = None
                if self.kind == 2:
                    sc = block.skip_tp(node_feats[:n_local], local_attrs)
                up = block.linear_up(node_feats)
                tp_weights = block.conv_tp_weights(edge_feats)
                if cutoff is not None:
                    tp_weights = tp_weights * cutoff
                mji = block.conv_tp(up[edge_index[0]], edge_attrs, tp_weights)
                message = torch.zeros((n_local, mji.shape[1]), dtype=mji.dtype,
                                      device=mji.device).index_add_(0, edge_index[1], mji)
                message = block.linear(message) / self.avg_num_neighbors
                if self.kind == 1:
                    message = block.skip_tp(message, local_attrs)
                message = block.reshape(message)
            h = self.product(message, sc, local_attrs)
            heads = torch.full((n_local,), self.head, dtype=torch.long, device=h.device)
            e = self.readout(h, heads)[:, self.head] * self.scale
            return h, e

    class Layers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_block = Embed()
            for i in range(n_layers):  # children layer0, layer1, ... (called by name)
                setattr(self, f"layer{i}", Layer(i))
            self.register_buffer("atomic_numbers", export.atomic_numbers.clone())
            self.register_buffer("r_max", export.r_max.clone())
            self.register_buffer("num_interactions", export.num_interactions.clone())

        @torch.jit.export
        def embed(self, node_attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.embed_block(node_attrs)

        def forward(self, node_attrs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.embed_block(node_attrs)

    return Layers(), dtype


def write_layers(export_file: str | Path, out: str | Path | None = None) -> Path:
    """Write the per-layer file for a MACE LAMMPS export and check it reproduces the whole
    model's per-atom energies and forces on a small periodic test cell. Returns its path."""
    import torch

    from potentials.mace import load_torchscript

    export_file = Path(export_file)
    out = Path(out) if out is not None else layers_path_for(export_file)
    export = load_torchscript(export_file)
    for p in export.parameters():
        p.requires_grad_(False)
    last_error: Exception | None = None
    for sliced in (True, False):  # the generic path if the sliced one does not reproduce
        try:
            with warnings.catch_warnings():  # torch 2.13: "torch.jit.script is deprecated"
                warnings.simplefilter("ignore", DeprecationWarning)
                container, dtype = _build(export, sliced=sliced)
                widths = _feature_widths(container, export, dtype)
                container.register_buffer("feature_widths",
                                          torch.tensor(widths, dtype=torch.long))
                digest = bytes.fromhex(sha256_file(export_file))
                container.register_buffer("source_sha256",
                                          torch.tensor(list(digest), dtype=torch.uint8))
                container.register_buffer("layers_format", torch.tensor([LAYERS_FORMAT]))
                container.register_buffer("sliced", torch.tensor([sliced]))
                final = torch.jit.script(container)
        except RuntimeError as exc:  # TorchScript cannot compile or run the wrappers
            raise PotentialError(f"cannot split {export_file.name} into layers: "
                                 f"{str(exc).strip().splitlines()[0]}") from exc
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".layers-", suffix=".pt")
        os.close(fd)
        try:
            final.save(tmp)
            os.chmod(tmp, 0o644)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    reloaded = torch.jit.load(tmp)
                _check_against_whole(export, reloaded, dtype)
            except PotentialError as exc:
                last_error = exc
                continue
            os.replace(tmp, out)
            return out
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    assert last_error is not None
    raise last_error


def _feature_widths(container: Any, export: Any, dtype: Any) -> list[int]:
    import torch

    n_species = len(export.atomic_numbers)
    attrs = torch.eye(n_species, dtype=dtype)[:1]
    h, _ = container.embed(attrs)
    widths = [int(h.shape[1])]
    vec = torch.tensor([[0.0, 0.0, 0.5 * float(export.r_max)]], dtype=dtype)
    attrs2 = torch.eye(n_species, dtype=dtype)[[0, 0]]
    edge = torch.tensor([[1], [0]], dtype=torch.long)
    h2 = torch.cat([h, h])
    for i in range(int(export.num_interactions)):
        h_out, _ = getattr(container, f"layer{i}")(attrs2, h2, vec, edge, 1)
        widths.append(int(h_out.shape[1]))
        h2 = torch.cat([h_out, h_out])
    return widths


def _check_against_whole(export: Any, layered: Any, dtype: Any) -> None:
    """Layer-by-layer evaluation (all atoms local, periodic images as edge shifts) must give
    the whole export's node energies and forces on a small rattled cell."""
    import numpy as np
    import torch
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    from potentials.mace import MaceTorchScriptCalculator

    numbers = [int(z) for z in export.atomic_numbers.tolist()]
    rng = np.random.default_rng(7)
    n = 6
    atoms = Atoms(numbers=[numbers[k % len(numbers)] for k in range(n)],
                  positions=rng.uniform(0, 4.2, size=(n, 3)),
                  cell=[[4.4, 0.0, 0.0], [0.6, 4.6, 0.0], [0.3, -0.4, 4.8]], pbc=True)
    calc = MaceTorchScriptCalculator(model=export)
    atoms.calc = calc
    ref_e = atoms.get_potential_energies()
    ref_f = atoms.get_forces()
    # As pair_style mace parallel sees it: receivers local, a sender in another image is a
    # ghost node (a copy of its owner's features), vector x_recv - x_send(image)
    i, j, shift, d = neighbor_list("ijSD", atoms, float(export.r_max), self_interaction=False)
    owner = list(range(n))
    ghost: dict[tuple[int, int, int, int], int] = {}
    senders = []
    for jj, s in zip(j.tolist(), shift.tolist()):
        if s == [0, 0, 0]:
            senders.append(jj)
            continue
        key = (jj, *s)
        if key not in ghost:
            ghost[key] = len(owner)
            owner.append(jj)
        senders.append(ghost[key])
    assert len(owner) > n, "test cell must have ghost nodes"
    vectors = torch.tensor(-d, dtype=dtype, requires_grad=True)
    edge_index = torch.tensor(np.stack([senders, i]), dtype=torch.long)
    owner_t = torch.tensor(owner)
    species = [numbers.index(int(z)) for z in atoms.numbers]
    attrs = torch.nn.functional.one_hot(torch.tensor(species), len(numbers)).to(dtype)[owner_t]
    h, e0 = layered.embed(attrs)
    energy = e0[:n].clone()
    for k in range(int(export.num_interactions)):
        h_local, e = getattr(layered, f"layer{k}")(attrs, h, vectors, edge_index, n)
        h = h_local[owner_t]  # the forward exchange: ghosts copy their owner
        energy = energy + e
    (grad,) = torch.autograd.grad(energy.sum(), [vectors])
    forces = np.zeros((n, 3))
    g = grad.detach().numpy()
    np.add.at(forces, i, -g)
    np.add.at(forces, j, g)
    de = np.max(np.abs(energy.detach().numpy() - ref_e))
    df = np.max(np.abs(forces - ref_f))
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    if de > tol * max(1.0, np.max(np.abs(ref_e))) or df > tol * max(1.0, np.max(np.abs(ref_f))):
        raise PotentialError(f"per-layer MACE split disagrees with the whole export "
                             f"(max |dE_i| {de:.2e} eV, max |dF| {df:.2e} eV/A); not written")


def cached_layers(export_file: str | Path, cache_root: Path) -> Path:
    """The per-layer file for ``export_file``: beside it if present (``harness export
    mace`` writes it there), else generated once into ``cache_root/mace-layers/`` keyed
    by the export's sha256 and :data:`LAYERS_FORMAT`."""
    export_file = Path(export_file)
    beside = layers_path_for(export_file)
    if beside.is_file():
        return beside
    digest = sha256_file(export_file)
    key = hashlib.sha256(f"{digest}:{LAYERS_FORMAT}".encode()).hexdigest()[:20]
    target = cache_root / "mace-layers" / f"{export_file.stem}-{key}-layers.pt"
    if not target.is_file():
        write_layers(export_file, target)
    return target
