"""A report as blocks (headings, tables, paragraphs) rendered as markdown or as an HTML
fragment: the markdown table and the HTML page show the same rows because both are made
from one list of blocks."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    """A section title; ``level`` 1 is the document's."""

    level: int
    text: str


@dataclass(frozen=True)
class Table:
    """A table's header and rows of cells: rendered as markdown or as HTML from the same rows."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]


Block = Heading | Table | str  # a str is a paragraph


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as one markdown document."""
    def render(block: Block) -> str:
        if isinstance(block, Heading):
            return f"{'#' * block.level} {block.text}"
        if isinstance(block, Table):
            return _markdown(block.header, block.rows)
        return block
    return "\n\n".join(render(b) for b in blocks) + "\n"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(blocks: Sequence[Block]) -> str:
    """The blocks as an HTML fragment (escaped text, real tables)."""
    def render(block: Block) -> str:
        if isinstance(block, Heading):
            return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
        if isinstance(block, Table):
            return _html_table(block)
        return f"<p>{html.escape(block)}</p>"
    return "\n".join(render(b) for b in blocks)
