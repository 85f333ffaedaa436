"""How the report writes its numbers, the same in the page, the summary, the exports and a study."""

from __future__ import annotations


def p_text(p: float | None) -> str:
    """A p-value as the report prints it everywhere: three decimals, '< 0.001', or '–' when there is none."""
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")
