"""``harness analyze`` and ``harness arrhenius`` workflows (the CLI calls these).

Input validation happens before anything is written: a bad input raises
:class:`analysis.errors.AnalysisInputError` and leaves the output directory as it was.
Outputs are written atomically, and only the files this analysis produces are replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from analysis.errors import AnalysisInputError


def run_analyze(*, run_dir=None, dump=None, data=None, trajectory=None, species=None,
                temperature_K=None, timestep_fs=None, frame_interval_fs=None, type_map=None,
                out=None, fit_start_ps=None, fit_end_ps=None, seed=0, plots=True,
                analysis_start_ps=None, trajectory_format=None, charge=None) -> dict:
    """Analyse one trajectory and write ``transport.json`` and friends into ``out``.

    Exactly one input: ``run_dir`` (a `harness md` run directory), ``dump`` (a LAMMPS text
    dump, with ``data`` and ``timestep_fs``/``frame_interval_fs``), or ``trajectory``
    (extxyz / XDATCAR / vasprun.xml, with ``frame_interval_fs``). Returns the transport
    dictionary that was written to ``transport.json``.

    ``charge``: the formal charge number of the analysed species (a number), or per species
    (``{"Mg": 2}`` or CLI-style strings ``["Mg=2", "Li=1"]``); see :func:`parse_charges`.
    """
    from analysis.analyzer import TransportAnalyzer

    given = [name for name, value in (("RUN_DIR", run_dir), ("--dump", dump),
                                      ("--trajectory", trajectory)) if value is not None]
    if len(given) != 1:
        raise AnalysisInputError(
            "give exactly one input: a RUN_DIR of `harness md`, --dump FILE --data FILE, or "
            "--trajectory FILE" + (f" (got {' and '.join(given)})" if given else ""))
    if data is not None and dump is None:
        raise AnalysisInputError("--data belongs to --dump; give the dump too")
    settings = dict(species=species, temperature_K=temperature_K, fit_start_ps=fit_start_ps,
                    fit_end_ps=fit_end_ps, seed=int(seed), analysis_start_ps=analysis_start_ps,
                    **parse_charges(charge))
    if run_dir is not None:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise AnalysisInputError(f"run directory {run_dir} does not exist")
        analyzer = TransportAnalyzer.from_run_dir(run_dir, type_map=type_map, **settings)
        default_out = run_dir / "analysis"
    elif dump is not None:
        dump = Path(dump)
        if timestep_fs is None and frame_interval_fs is None:
            raise AnalysisInputError(
                "missing timestep information: pass --timestep-fs (time per frame = "
                "difference of dump TIMESTEP values x timestep) or --frame-interval-fs")
        analyzer = TransportAnalyzer.from_lammps_dump(
            dump, data=data, type_map=type_map, timestep_fs=timestep_fs,
            frame_interval_fs=frame_interval_fs, **settings)
        default_out = dump.parent / f"analysis_{dump.stem}"
    else:
        pieces = ([Path(t) for t in trajectory] if isinstance(trajectory, (list, tuple))
                  else [Path(trajectory)])
        trajectory = pieces[0]
        frame_interval = frame_interval_fs
        if frame_interval is None:
            # --timestep-fs is not taken as the frame interval: an XDATCAR written every
            # NBLOCK steps would give a D NBLOCK times too large
            raise AnalysisInputError(
                "missing timestep information: pass --frame-interval-fs (time between the "
                "stored frames, e.g. POTIM x NBLOCK for a VASP XDATCAR)"
                + ("; --timestep-fs is for LAMMPS dumps, whose TIMESTEP values count steps"
                   if timestep_fs is not None else ""))
        if len(pieces) == 1:
            analyzer = TransportAnalyzer.from_ase(trajectory, frame_interval_fs=frame_interval,
                                                  format=trajectory_format, **settings)
        else:  # consecutive segments of one trajectory (repeated --trajectory)
            analyzer = TransportAnalyzer.from_pieces(pieces, frame_interval_fs=frame_interval,
                                                     format=trajectory_format, **settings)
        default_out = trajectory.parent / f"analysis_{trajectory.stem}"
    results = analyzer.run()  # everything is computed before the first file is written
    results.write(Path(out) if out is not None else default_out, plots=plots)
    return results.as_dict()


def parse_charges(value) -> dict:
    """``--charge`` values as analysis settings: ``{"charge": q}`` or ``{"charges": {...}}``.

    Accepts None, a number, a mapping, or strings ``"2"`` / ``"Mg=2"`` (a list of them).
    """
    if value is None or value == [] or value == ():
        return {}
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for text in ([value] if isinstance(value, (str, int, float)) else list(value)):
            if isinstance(text, (int, float)):
                items.append((None, text))
                continue
            for part in str(text).split(","):
                key, sep, number = part.partition("=")
                items.append((key.strip(), number) if sep else (None, key))
    single, per_species = None, {}
    for key, number in items:
        try:
            q = float(number)
        except (TypeError, ValueError):
            raise AnalysisInputError(f"--charge {number!r} is not a number; give e.g. "
                                     "--charge 2 or --charge Mg=2") from None
        if key is None:
            single = q
        else:
            from analysis.readers import check_element

            per_species[check_element(key, what="--charge")] = q
    out = {}
    if single is not None:
        out["charge"] = single
    if per_species:
        out["charges"] = per_species
    return out


def run_arrhenius(transport_json_paths: Iterable, *, T_eval_K: float = 300.0,
                  out=None) -> dict:
    """Arrhenius fit over several ``transport.json`` files (one per temperature).

    Uses each file's D and 95 % interval; the conductivity at ``T_eval_K`` uses the ion
    count and volume of the run closest in temperature. Writes ``arrhenius.json`` into
    ``out`` when given.
    """
    from analysis.arrhenius import arrhenius
    from analysis.output import write_json

    records = []
    for path in transport_json_paths:
        path = Path(path)
        if path.is_dir():
            path = path / "transport.json"
        if not path.is_file():
            raise AnalysisInputError(f"{path} does not exist; give transport.json files or "
                                     "analysis directories")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise AnalysisInputError(f"{path} is not valid JSON ({exc})") from None
        for key in ("temperature_K", "D_cm2_per_s"):
            if record.get(key) is None:
                raise AnalysisInputError(f"{path} has no {key}; is it a transport.json?")
        record["_path"] = str(path)
        records.append(record)
    if len(records) < 2:
        raise AnalysisInputError("an Arrhenius fit needs transport.json files at two or more "
                                 "temperatures")
    species = {r.get("species") for r in records}
    if len(species) > 1:
        raise AnalysisInputError(f"the files are for different species ({sorted(species)})")
    closest = min(records, key=lambda r: abs(float(r["temperature_K"]) - T_eval_K))
    try:
        result = arrhenius(records, T_eval_K=T_eval_K, n_ions=closest.get("n_ions"),
                           volume_A3=closest.get("volume_A3"),
                           charge=float(closest.get("charge", 1.0)))
    except ValueError as exc:
        raise AnalysisInputError(str(exc)) from None
    summary = result.as_dict()
    summary["species"] = species.pop()
    summary["inputs"] = [r["_path"] for r in records]
    summary["flags_per_input"] = {r["_path"]: r.get("flags", []) for r in records}
    if out is not None:
        write_json(Path(out) / "arrhenius.json", summary)
    return summary
