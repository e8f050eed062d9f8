"""Benchmarks: what methods, solvers and the engine cost, measured against a baseline in the same run. The CLI
commands (``mixlab perf``, ``bench-ot``, ``bench-mixers``) only parse their flags and print what these return.

* :mod:`.perf`: every method's training step against ERM, the speed goals, the engine against a plain loop, the
  staging adapter's overhead;
* :mod:`.ot`: the OT solvers against POT and the authors' Sinkhorn, step times of the OT methods;
* :mod:`.mixers`: seconds to produce a mixed batch, per registered method, with the papers' timing ratios;
* :mod:`.timing`: synchronised timing and medians.
"""
