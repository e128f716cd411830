"""One plain-text table formatter for benchmarks and notebooks.

    print(format_table([dict(p=2, ms=41.3), dict(p=4, ms=97.0)], formats={"ms": "{:.1f}"}))
"""
from __future__ import annotations


def format_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Right-aligned columns named by the keys of ``rows[0]``; ``formats`` maps a column to a format string."""
    if not rows:
        return "(no rows)"
    formats = formats or {}
    heads = list(rows[0])
    cells = [[_cell(r.get(h, ""), formats.get(h)) for h in heads] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]

    def line(xs: list[str]) -> str:
        return "  ".join(x.rjust(w) for x, w in zip(xs, widths))

    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells])


def _cell(value, fmt: str | None) -> str:
    if fmt is not None and value not in ("", None):
        return fmt.format(value)
    if isinstance(value, float):
        if value != value:  # NaN: nothing to compare in this row
            return "-"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
