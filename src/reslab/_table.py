"""Plain aligned text tables (greppable; no terminal styling)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], total_row: bool = False,
                 align: str | None = None) -> str:
    """Columns padded to a common width; ``align`` has one 'l' or 'r' per column (default: the
    first column left, the others right). ``total_row`` puts a rule above the last row."""
    cols = len(headers)
    align = align or "l" + "r" * (cols - 1)
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(cols)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            c = str(c)
            out.append(c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(headers), rule, *[line(r) for r in rows]]
    if total_row and rows:
        lines.insert(len(lines) - 1, rule)
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    """A duration for people: None -> "—", "12.3 s", "6 min 41 s", "1 h 02 min" (whole seconds rounded)."""
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{seconds:.1f} s"
