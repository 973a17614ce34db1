"""Markdown helpers shared by every report."""
from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of a markdown table (and a blank line after it)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows], ""]
