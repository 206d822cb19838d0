"""The printed comparison of ``srn-port diff`` and ``srn-port port-diff``: one table of
judged rows (:class:`srn_port.port.taps.Judged`), one layer detail, one outcome (PASS, or
the first divergence and its diagnosis) and one ``--json`` writer, each command naming its
rows with its own columns (SRN's a level and a layer, a port's a tap)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import click

from ..core.fileio import atomic_write

WRAP = 100


def _fmt(v: float) -> str:
    if v is None or v != v:
        return "-"
    if v == float("inf"):
        return "inf"
    return "0" if v == 0 else f"{v:.2e}"


def _para(text: str, indent: str = "") -> str:
    return textwrap.fill(text, WRAP, initial_indent=indent,
                         subsequent_indent=" " * len(indent) + "  ")


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def format_table(rows: Sequence, lead: str, headers: Mapping[str, str],
                 tolerance_width: int) -> str:
    """The rows, one a line, under a header line. ``lead``: the format of the columns that
    name a row and its shape, on the row's fields named in ``headers`` (field -> column
    header) and ``shape`` (as AxBxC), e.g. ``"{level:>5}  {layer:<15} {shape:<14}"``; then the
    errors, the tolerance (a column ``tolerance_width`` wide) and the verdict."""
    lines = [f"{lead.format(shape='shape', **headers)} {'max abs':>9} {'max rel':>9} "
             f"{'mean abs':>9}  {'tolerance (rel)':<{tolerance_width}} result"]
    for r in rows:
        tol = f"{r.tolerance} {r.tolerance_rel:.0e}" if r.tolerance_rel else f"{r.tolerance} 0"
        names = {k: getattr(r, k) for k in headers}
        lines.append(f"{lead.format(shape=_shape(r.shape), **names)} {_fmt(r.max_abs_err):>9} "
                     f"{_fmt(r.max_rel_err):>9} {_fmt(r.mean_abs_err):>9}  "
                     f"{tol:<{tolerance_width}} "
                     f"{'pass' if r.passed else 'FAIL'}{'  ' + r.note if r.note else ''}")
    return "\n".join(lines)


def format_outcome(result, passed: str, where: Callable[[object], str]) -> List[str]:
    """``PASS: {passed} within the tolerance table``, or the first divergence (named by
    ``where(row)``) and its diagnosis (:class:`srn_port.port.taps.Diagnosis`; its module,
    where it names one)."""
    f = result.first_divergence
    if f is None:
        return [f"PASS: {passed} within the tolerance table"]
    out = [f"FIRST DIVERGENCE: {where(f)}: max rel error {_fmt(f.max_rel_err)} > "
           f"'{f.tolerance}' ({f.tolerance_rel:g}){'  ' + f.note if f.note else ''}"]
    d = result.diagnosis
    if d is not None:
        at = f" at {d.module}" if d.module else ""
        out.append(_para(f"diagnosis ({d.cause}{at}): {d.summary}"))
        out += [_para(e, "  - ") for e in d.evidence]
    return out


def write_json(data: dict, json_out: Optional[str], notes: List[str]) -> bool:
    """``--json``: ``-`` prints ``data`` instead of the table (True); a file name writes it
    there (atomically; said in ``notes``)."""
    if json_out == "-":
        click.echo(json.dumps(data, indent=1))
        return True
    if json_out is not None:
        text = json.dumps(data, indent=1)
        atomic_write(Path(json_out), lambda tmp: Path(tmp).write_text(text))
        notes.append(f"JSON written to {json_out}")
    return False


def format_detail(d) -> str:
    b, c, y, x = d.max_at
    out = [f"layer {d.layer}, level {d.level} ({_shape(d.shape)}, tolerance {d.tolerance}: "
           f"{'pass' if d.passed else 'FAIL'})",
           f"  max abs error {_fmt(d.max_abs_err)} (max |ref| {_fmt(d.max_abs_ref)}) at batch {b}, "
           f"channel {c}, row {y}, column {x}: model {d.ours_at_max:.6g}, reference "
           f"{d.ref_at_max:.6g}",
           f"  {'where':<28} {'positions':>9} {'max abs':>9} {'mean abs':>9}"]
    for s in d.rings + d.sides:
        out.append(f"  {s.where:<28} {s.positions:>9} {_fmt(s.max_abs_err):>9} "
                   f"{_fmt(s.mean_abs_err):>9}")
    out.append(f"  {100 * d.border_error_share:.0f}% of the summed error lies in the outer "
               f"{len(d.rings) - 1} px, which hold {100 * d.border_position_share:.0f}% of "
               f"the positions")
    out.append("  histogram of |error| / max |ref|:")
    total = max(sum(h.count for h in d.histogram), 1)
    for h in d.histogram:
        bar = "#" * round(40 * h.count / total)
        out.append(f"    {h.label:<16} {h.count:>9}  {bar}")
    worst = sorted(range(len(d.channel_max_abs_err)), key=lambda i: -d.channel_max_abs_err[i])[:4]
    out.append("  worst channels: " + ", ".join(f"{i} ({_fmt(d.channel_max_abs_err[i])})"
                                                for i in worst))
    return "\n".join(out)
