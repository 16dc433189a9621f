"""The run's report: a short table (stderr) and BENCHMARKS.md's marker blocks, each section's rows
written by its own module."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

MD_HEADER = """# Benchmarks

Figures from `python -m bench` (issue #6). The blocks between `<!-- bench:... -->` markers are
rewritten by `python -m bench --write-md`; each block names the command that produced it. The
machines these run on are shared, so absolute figures are noisy: compare ratios measured in the
same run (every ratio below is).
"""


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def summary_rows(result: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The headline figures of each section that ran, as (metric, value) rows."""
    from bench.sections import MODULES

    sections = result["sections"]
    return {name: MODULES[name].rows(sections[name], sections) for name in MODULES if name in sections}


def format_table(result: dict[str, Any]) -> str:
    rows = summary_rows(result)
    width = max((len(m) for section in rows.values() for m, _ in section), default=10)
    lines = []
    for name, section in rows.items():
        lines.append(f"== {name} ({result['sections'][name].get('section_s', '?')} s)")
        lines += [f"  {metric:<{width}}  {value}" for metric, value in section]
    m = result["machine"]
    lines.append(f"-- {m['cores']} cores {m['cpu_model']}, {m['ram_gb']} GB, load {m['load_avg_start']} -> {m.get('load_avg_end')}, {result.get('elapsed_s')} s")
    return "\n".join(lines)


def definitions() -> str:
    """The definitions block: each section's bullet (the sections import this module, hence the late import)."""
    from bench.sections import DEFINITION_ORDER, MODULES

    order = [*DEFINITION_ORDER, *(n for n in MODULES if n not in DEFINITION_ORDER)]
    return "## Definitions\n\n" + "".join(MODULES[n].DEFINITION for n in order)


def _block(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace each named marker block in ``text`` (appending blocks it lacks, in the given order)."""
    for name, body in blocks.items():
        block = _block(name, body)
        pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    return text


def markdown_blocks(result: dict[str, Any], command: str) -> dict[str, str]:
    """BENCHMARKS.md's blocks for this run: the machine, the definitions, one per section that ran."""
    from bench.sections import MODULES

    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    blocks = {
        "machine": (
            "## Machine\n\n"
            f"- {m['cores']} cores, {m['cpu_model']}, {m['ram_gb']} GB RAM, Python {m['python']}\n"
            f"- {versions}\n"
            "- each section below names the run it comes from and the load average around it: **shared machine, "
            "noisy figures**\n"
        ),
        "definitions": definitions(),
    }
    for name, rows in summary_rows(result).items():
        run = (f"`{command}`, {m['date']} ({result.get('elapsed_s')} s; load average {m['load_avg_start']} -> "
               f"{m.get('load_avg_end')})")
        lines = [f"## {MODULES[name].TITLE}", "", run, "", "| metric | value |", "|---|---|"]
        lines += [f"| {metric} | {value.replace('|', '/')} |" for metric, value in rows]
        blocks[name] = "\n".join(lines) + "\n"
    return blocks


def write_markdown(path: Path, result: dict[str, Any], command: str) -> None:
    text = path.read_text() if path.exists() else MD_HEADER
    path.write_text(replace_blocks(text, markdown_blocks(result, command)).rstrip() + "\n")
