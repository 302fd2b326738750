"""Reference data for campaigns: experimental conductivities, AIMD/DeePMD D(T) and Ea.

* Experiment: a CSV of room-temperature ionic conductivities with OBELiX's columns
  (``ID``, ``Reduced Composition``, ``Ionic conductivity (S cm-1)``). Values written as
  ``<1E-10`` are upper bounds: the bound is used as the value (as seed 004 did) and
  ``upper_bound`` is set so tables and plots can mark it. The project does not ship OBELiX
  (CC BY 4.0); :func:`download_obelix` fetches it for online users.
* AIMD / DeePMD: either a CSV of reference D(T) and/or Ea (:func:`read_reference_csv`), or
  reference trajectories (XDATCAR, vasprun.xml, extxyz) analysed by the same analysis layer
  as the tasks (:func:`analyse_reference_trajectories`), or a potential of the campaign
  itself (a DeePMD model run as ``deepmd:/path/model.pb``) named as
  ``references.reference_potential``.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

OBELIX_ID = "ID"
OBELIX_COMPOSITION = "Reduced Composition"
OBELIX_SIGMA = "Ionic conductivity (S cm-1)"
OBELIX_REPOSITORY = "https://raw.githubusercontent.com/NRC-Mila/OBELiX/main/data/downloads"

_NUMBER = re.compile(r"^\s*([<>]=?|~)?\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


class ReferenceError(ValueError):
    """A reference file cannot be used; the message says why."""


def parse_conductivity(value: Any) -> tuple[float, str | None]:
    """``"1.6e-10"`` -> (1.6e-10, None); ``"<1E-10"`` -> (1e-10, "upper"); blank -> (nan, None)."""
    if value is None:
        return math.nan, None
    if isinstance(value, (int, float)):
        return float(value), None
    text = str(value).strip()
    if not text or text.lower() in ("nan", "none", "n/a", "-"):
        return math.nan, None
    match = _NUMBER.match(text)
    if not match:
        raise ReferenceError(f"cannot read conductivity {value!r}")
    bound = {"<": "upper", "<=": "upper", ">": "lower", ">=": "lower", "~": None}.get(
        match.group(1) or "~")
    return float(match.group(2)), bound


def read_experimental_csv(path: str | Path):
    """OBELiX-style CSV -> DataFrame(ID, composition, sigma_S_per_cm, upper_bound, lower_bound)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"experimental CSV not found: {path}")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (OBELIX_ID, OBELIX_SIGMA) if c not in raw.columns]
    if missing:
        raise ReferenceError(f"{path} lacks column(s) {', '.join(missing)} (OBELiX columns: "
                             f"'{OBELIX_ID}', '{OBELIX_COMPOSITION}', '{OBELIX_SIGMA}')")
    rows = []
    for _, row in raw.iterrows():
        value, bound = parse_conductivity(row[OBELIX_SIGMA])
        if not math.isfinite(value) or value <= 0:
            continue
        rows.append({"ID": row[OBELIX_ID].strip(),
                     "composition": row.get(OBELIX_COMPOSITION, "").strip(),
                     "sigma_S_per_cm": value, "upper_bound": bound == "upper",
                     "lower_bound": bound == "lower", "raw": row[OBELIX_SIGMA].strip(),
                     "source": str(path)})
    return pd.DataFrame(rows, columns=["ID", "composition", "sigma_S_per_cm", "upper_bound",
                                       "lower_bound", "raw", "source"])


def match_experimental(structures: list[dict[str, Any]], *, table=None,
                       inline: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """structure name -> experimental record.

    ``structures``: dicts with ``name`` and ``reference_id``. Matching order: inline values
    by structure name; the CSV row whose ID is the ``reference_id``; the row whose ID is the
    name; the only row whose reduced composition is the name (ambiguous compositions, e.g.
    the two Li3N polymorphs, need a ``reference_id``).
    """
    found: dict[str, dict[str, Any]] = {}
    by_name = {v["structure"]: v for v in (inline or [])}
    for s in structures:
        name, ref = s["name"], s.get("reference_id")
        if name in by_name:
            v = by_name[name]
            found[name] = {"reference_id": ref, "sigma_exp_S_per_cm": float(v["sigma_S_per_cm"]),
                           "exp_upper_bound": bool(v.get("upper_bound", False)),
                           "exp_source": v.get("source") or "campaign YAML"}
            continue
        if table is None or len(table) == 0:
            continue
        rows = None
        for key in (ref, name):
            if key:
                hit = table[table["ID"] == key]
                if len(hit):
                    rows = hit
                    break
        if rows is None:
            hit = table[table["composition"] == name]
            if len(hit) == 1:
                rows = hit
        if rows is not None:
            r = rows.iloc[0]
            found[name] = {"reference_id": r["ID"], "sigma_exp_S_per_cm": float(r["sigma_S_per_cm"]),
                           "exp_upper_bound": bool(r["upper_bound"]), "exp_source": r["source"]}
    return found


def read_reference_csv(path: str | Path):
    """Reference D(T) and Ea: returns (D table, Ea table) as DataFrames.

    Columns: ``structure`` (or ``material``), ``temperature_K``, ``D_cm2_per_s`` and
    optionally ``D_ci95_lo``/``D_ci95_hi``; ``Ea_eV`` on any row (rows without a
    temperature may carry Ea only).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"reference CSV not found: {path}")
    df = pd.read_csv(path, comment="#")
    if "structure" not in df.columns and "material" in df.columns:
        df = df.rename(columns={"material": "structure"})
    if "structure" not in df.columns:
        raise ReferenceError(f"{path} needs a 'structure' column (campaign structure names)")
    d_cols = ["structure", "temperature_K", "D_cm2_per_s"]
    D = pd.DataFrame(columns=d_cols + ["D_ci95_lo", "D_ci95_hi"])
    if "temperature_K" in df.columns and "D_cm2_per_s" in df.columns:
        D = df.dropna(subset=["temperature_K", "D_cm2_per_s"]).copy()
        for c in ("D_ci95_lo", "D_ci95_hi"):
            if c not in D.columns:
                D[c] = math.nan
        D = D[d_cols + ["D_ci95_lo", "D_ci95_hi"]].astype({"temperature_K": float,
                                                            "D_cm2_per_s": float})
    Ea = pd.DataFrame(columns=["structure", "Ea_eV"])
    if "Ea_eV" in df.columns:
        Ea = df.dropna(subset=["Ea_eV"]).groupby("structure", as_index=False)["Ea_eV"].first()
    if len(D) == 0 and len(Ea) == 0:
        raise ReferenceError(f"{path} holds neither D(T) (temperature_K, D_cm2_per_s) nor Ea_eV")
    D["source"] = str(path)
    return D.reset_index(drop=True), Ea.reset_index(drop=True)


def analyse_reference_trajectories(entries: list[dict[str, Any]], *, out_dir: str | Path,
                                   seed: int = 0) -> list[dict[str, Any]]:
    """Analyse each reference trajectory with the tasks' analysis layer (cached on disk).

    Each entry: ``structure``, ``temperature_K``, ``path`` and ``frame_interval_fs`` (time
    between stored frames), optional ``format``, ``species``, ``analysis_start_ps``,
    ``fit_start_ps``, ``fit_end_ps``. Returns one record per entry with D, its interval,
    and the folder holding ``transport.json`` / ``rdf.csv``.
    """
    import json

    from harness.analyze import run_analyze

    records = []
    for entry in entries:
        for key in ("structure", "temperature_K", "path"):
            if key not in entry:
                raise ReferenceError(f"reference trajectory entry {entry} lacks '{key}'")
        T = float(entry["temperature_K"])
        # the cache key holds the resolved path and every analysis setting: two vasprun.xml of
        # one structure and temperature, or a changed fit window, never share a result
        # a list of paths: consecutive pieces of one trajectory (e.g. AIMD segments)
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        resolved = [str(Path(p).resolve()) for p in paths]
        key = json.dumps({"path": resolved if len(paths) > 1 else resolved[0], "T": T,
                          "seed": seed,
                          **{k: entry.get(k) for k in ("frame_interval_fs", "species",
                                                       "fit_start_ps", "fit_end_ps",
                                                       "analysis_start_ps", "format")}},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        out = Path(out_dir) / (f"{entry['structure']}__T{T:g}__{Path(paths[0]).name}"
                               f"__{digest}")
        cached = out / "transport.json"
        if cached.is_file():
            transport = json.loads(cached.read_text())
        else:
            transport = run_analyze(trajectory=paths if len(paths) > 1 else paths[0],
                                    temperature_K=T,
                                    frame_interval_fs=entry.get("frame_interval_fs"),
                                    species=entry.get("species"), out=out,
                                    fit_start_ps=entry.get("fit_start_ps"),
                                    fit_end_ps=entry.get("fit_end_ps"), seed=seed, plots=False,
                                    analysis_start_ps=entry.get("analysis_start_ps"),
                                    trajectory_format=entry.get("format"))
        ci = transport.get("D_ci95_cm2_per_s") or [math.nan, math.nan]
        records.append({"structure": entry["structure"], "temperature_K": T,
                        "D_cm2_per_s": transport["D_cm2_per_s"], "D_ci95_lo": ci[0],
                        "D_ci95_hi": ci[1], "msd_max_A2": transport.get("msd_max_A2"),
                        "analysis_dir": str(out), "source": str(entry["path"])})
    return records


def download_obelix(dest: str | Path, *, timeout_s: float = 120.0) -> dict[str, Path]:
    """Fetch OBELiX (CC BY 4.0, Therrien et al. 2025): ``all.csv`` and the CIFs.

    Writes ``dest/all.csv`` and ``dest/<ID>.cif`` (from ``all_cifs.zip``,
    ``all_randomized_cifs/``), which ``benchmark_set: {name: obelix-seed004, dir: dest}`` and
    ``references.experimental_csv: dest/all.csv`` read. Needs internet.
    """
    import io
    import urllib.request
    import zipfile

    from harness.md.rundir import atomic_write_text

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(name: str) -> bytes:
        url = f"{OBELIX_REPOSITORY}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                return response.read()
        except OSError as exc:
            raise ReferenceError(f"could not download {url}: {exc}") from exc

    csv_text = fetch("all.csv").decode()
    written = {"csv": atomic_write_text(dest / "all.csv", csv_text)}
    with zipfile.ZipFile(io.BytesIO(fetch("all_cifs.zip"))) as archive:
        for member in archive.namelist():
            name = Path(member).name
            if member.endswith(".cif") and "randomized" in member and name:
                atomic_write_text(dest / name, archive.read(member).decode())
    written["cifs"] = dest
    atomic_write_text(dest / "README.md",
                      "OBELiX (Therrien et al., 2025), NRC-Mila/OBELiX, CC BY 4.0. "
                      "Downloaded by harness.campaign.references.download_obelix.\n")
    return written


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - needs internet
    """``python -m harness.campaign.references download-obelix DIR``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "download-obelix":
        print("usage: python -m harness.campaign.references download-obelix DIR", file=sys.stderr)
        return 2
    written = download_obelix(args[1])
    print(f"OBELiX written to {written['cifs']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
