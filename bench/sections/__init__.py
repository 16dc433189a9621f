"""The benchmark's sections, one module each.

A section module has ``NAME``, ``TITLE`` (its heading in BENCHMARKS.md), ``DEFINITION`` (its bullet
of the definitions block, markdown; may be empty), ``run(ctx) -> dict`` (its JSON) and
``rows(section, sections) -> [(metric, value)]`` (its table; ``sections`` is every section of the run).
"""

from __future__ import annotations

from types import ModuleType

from bench.sections import annotate, breakdown, decode, live, memory, naive, pipeline, segmenter, split, sweep, xsam

#: In run order. The breakdown runs last: what its frames leave in the driver's heap would otherwise be
#: returned to the system during the memory section and read as the driver shrinking with video length.
MODULES: dict[str, ModuleType] = {m.NAME: m for m in (decode, segmenter, xsam, pipeline, split, naive, sweep,
                                                   live, memory, annotate, breakdown)}
#: Their definitions in BENCHMARKS.md's order.
DEFINITION_ORDER = ("decode", "segmenter", "breakdown", "pipeline", "split", "naive", "sweep", "live", "memory",
                    "annotate")
SECTIONS = tuple(MODULES)
#: X-SAM tiny alone takes ~15 s on 2 cores: --quick runs it only when named in --only.
QUICK_SECTIONS = tuple(s for s in SECTIONS if s != "xsam")
#: Sections that need neither Ray nor long clips (what the fast test runs).
CHEAP_SECTIONS = ("decode", "segmenter", "breakdown")
