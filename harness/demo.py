"""``harness demo``: the whole pipeline on a bundled structure in a few minutes of CPU.

A hot, short NVT run of the bundled Li6PS5Cl argyrodite cell (52 atoms: one ordering of
the disordered structure, Li on the crystallographic 48h sites, made by
:mod:`harness.ordering`; see ``inputs/structures.yaml``) with SevenNet-0 through its
native LAMMPS plugin, followed by the transport analysis. The run
is far too short for a converged diffusion coefficient; the demo says so and the analysis
flags it. It shows what a real run directory and ``transport.json`` look like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

DEMO_STRUCTURE = "Li6PS5Cl"
DEMO_TEMPERATURE_K = 1000.0
DEMO_TIMESTEP_FS = 2.0
#: sized for < 10 min on a 2-core laptop including the first plugin build (~2 min):
#: SevenNet-0 costs ~0.5-0.7 s per step for these 52 atoms on 2 CPU cores
DEMO_STEPS = 400
DEMO_EQUILIBRATION_STEPS = 50


def run_demo(*, out: Path, steps: int = DEMO_STEPS, potential: str = "sevennet-0",
             force: bool = False, progress: Callable[[int, int], None] | None = None,
             echo: Callable[[str], None] | None = None) -> dict:
    from rich.console import Console

    from harness.analyze import run_analyze
    from harness.md.workflow import run_md
    from harness.md.spec import MDSpec

    console = Console()
    say = echo or (lambda text: console.print(text, highlight=False))
    out = Path(out)
    spec = MDSpec(structure=DEMO_STRUCTURE, potential=potential,
                  temperature_K=DEMO_TEMPERATURE_K, timestep_fs=DEMO_TIMESTEP_FS,
                  steps=steps, equilibration_steps=DEMO_EQUILIBRATION_STEPS, dump_every=5,
                  thermo_every=10, restart_every=max(steps // 2, 1), seed=2025,
                  ensemble="nvt_nose_hoover", out=str(out / "md"))
    say(f"[bold]harness demo[/]: {DEMO_STRUCTURE} (bundled: one ordering of the disordered argyrodite), {potential}, "
        f"NVT Nose-Hoover {spec.temperature_K:.0f} K, {spec.timestep_fs} fs, "
        f"{spec.equilibration_steps} equilibration + {spec.steps} production steps "
        f"({spec.duration_ps:.1f} ps) in LAMMPS")
    md = run_md(spec, force=force, progress=progress)
    ms = md.manifest["timing"]["ms_per_step"]
    say(f"MD done: {md.n_atoms} atoms, {md.wall_s:.0f} s wall"
        + (f", {ms:.0f} ms/step via route '{md.manifest['potential']['route']}'" if ms else ""))
    analysis_dir = out / "analysis"
    transport = run_analyze(run_dir=md.run_dir, out=analysis_dir, plots=True)
    ci = transport.get("D_ci95_cm2_per_s") or [float("nan"), float("nan")]
    say("\n[bold]results[/] (Li, from the production trajectory)")
    say(f"  D(Li)      = {transport['D_cm2_per_s']:.3e} cm^2/s "
        f"(95% CI {ci[0]:.2e} .. {ci[1]:.2e}); OLS slope {transport['D_ols_cm2_per_s']:.3e}")
    say(f"  sigma_NE   = {transport['sigma_NE_mS_per_cm']:.3e} mS/cm at {spec.temperature_K:.0f} K")
    say(f"  max MSD    = {transport['msd_max_A2']:.2f} A^2 "
        f"(seed 004 calls a run reliable above 20 A^2)")
    if transport.get("flags"):
        say(f"  [yellow]flags[/]: {', '.join(map(str, transport['flags']))}")
    say("\n[bold]files[/]")
    say(f"  run directory: {md.run_dir} (manifest.json, in.lammps, log.lammps, thermo.csv, "
        "traj.lammpstrj, restart.*)")
    say(f"  analysis:      {analysis_dir} (transport.json, msd.csv, plots)")
    say(f"\nThis demo is {spec.duration_ps:.1f} ps: far too short for a converged D. "
        "For real numbers run "
        "`harness md` for 50-100 ps per temperature (GPU) and `harness analyze`.")
    return {"md": md.manifest, "transport": transport}
