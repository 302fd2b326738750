"""Static properties through the same LAMMPS pair styles as the MD.

* :mod:`~harness.statics.calculator` - ``LammpsCalculator``: an ASE calculator backed by one
  reused LAMMPS instance running any registered potential on its route (``run 0``);
* :mod:`~harness.statics.crosscheck` - one-off LAMMPS single points vs the ASE calculator;
* :mod:`~harness.statics.parity` - ``harness parity`` (energy/force/stress vs DFT frames);
* :mod:`~harness.statics.relax` - ``harness relax`` (FIRE + FrechetCellFilter, failure classes);
* :mod:`~harness.statics.elastic` - ``harness elastic`` (finite strains, VRH, EOS);
* :mod:`~harness.statics.formation` - ``harness formation`` (E_form, E_above_hull, MP2020);
* :mod:`~harness.statics.neb`, :mod:`~harness.statics.phonons` - ``harness neb``, ``harness
  phonons``; :mod:`~harness.statics.statics_run` and :mod:`~harness.statics.tables` - shared
  output plumbing.
"""
