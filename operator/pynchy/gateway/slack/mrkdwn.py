"""Markdown (what agents write) to Slack mrkdwn (what Slack shows).

Parsed with markdown-it-py (CommonMark plus GFM strikethrough and tables), then rendered:

* `**bold**` → `*bold*`, `*it*`/`_it_` → `_it_`, `~~s~~` → `~s~`
* `[text](url)` → `<url|text>`, autolinks → `<url>`, images → `<src|alt>`
* headings → a bold line; lists → `•`/`◦`/`▪` bullets or `1.` numbers, nested items indented
* block quotes → `> ` on every line; a rule → `───`
* code (fenced, indented, inline) is never reformatted; fences lose their language (Slack would show it)
* tables → a monospace block with padded columns (Slack has no tables)
* `&`, `<`, `>` are escaped everywhere, code included (Slack decodes the entities there too), except
  Slack's own control sequences the agent wrote on purpose: `<@U…>`, `<#C…>`, `<!here>` and the like.

Pure and total: any text (half a streamed reply, an unclosed fence) renders to something."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_md = MarkdownIt("commonmark", {"html": False}).enable(["strikethrough", "table"])

# Mentions, channel links and special mentions, with an optional '|label'.
_CONTROL = re.compile(
    r"<(?:@[UWB][A-Z0-9]+|#[CG][A-Z0-9]+|!(?:here|channel|everyone)|!subteam\^[A-Z0-9]+|!date\^[^<>|]+)"
    r"(?:\|[^<>]*)?>"
)
_BULLETS = ("•", "◦", "▪")
_INDENT = "    "
RULE = "───"


def escape(text: str) -> str:
    """Slack's three entities; nothing else is escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_text(text: str) -> str:
    """Escape prose, keeping Slack control sequences (`<@U123>`) as they are."""
    out: list[str] = []
    at = 0
    for match in _CONTROL.finditer(text):
        out.append(escape(text[at : match.start()]))
        out.append(match.group(0))
        at = match.end()
    out.append(escape(text[at:]))
    return "".join(out)


def to_mrkdwn(markdown: str) -> str:
    """Render `markdown` as Slack mrkdwn."""
    root = SyntaxTreeNode(_md.parse(markdown))
    return _blocks(root.children, depth=0).strip("\n")


# -- blocks -----------------------------------------------------------------------------


def _blocks(nodes: list[SyntaxTreeNode], depth: int, tight: bool = False) -> str:
    rendered = [_block(node, depth) for node in nodes]
    return ("\n" if tight else "\n\n").join(part for part in rendered if part != "")


def _block(node: SyntaxTreeNode, depth: int) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline_of(node)
    if kind == "heading":
        text = _inline_of(node, in_bold=True).strip()
        return f"*{text}*" if text else ""
    if kind in ("fence", "code_block"):
        return _code_block(node.content)
    if kind == "blockquote":
        inner = _blocks(node.children, depth)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind == "hr":
        return RULE
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, depth)
    if kind == "table":
        return _table(node)
    # html_block cannot occur (html is off); anything unknown shows as plain text.
    return escape_text(node.content)


def _code_block(content: str) -> str:
    return "```\n" + escape(content.rstrip("\n")) + "\n```"


def _list(node: SyntaxTreeNode, depth: int) -> str:
    ordered = node.type == "ordered_list"
    start = int(node.attrs.get("start", 1)) if ordered else 1
    # Tight lists mark their paragraphs hidden: items then stay on consecutive lines.
    tight = all(child.hidden for item in node.children for child in item.children if child.type == "paragraph")
    lines: list[str] = []
    for index, item in enumerate(node.children):
        marker = f"{start + index}." if ordered else _BULLETS[min(depth, len(_BULLETS) - 1)]
        body = _blocks(item.children, depth + 1, tight=tight)
        first, *rest = body.split("\n") if body else [""]
        lines.append(f"{marker} {first}".rstrip())
        lines.extend(f"{_INDENT}{line}" if line else "" for line in rest)
        if not tight and index < len(node.children) - 1:
            lines.append("")
    return "\n".join(lines)


def _table(node: SyntaxTreeNode) -> str:
    rows: list[list[str]] = []
    for section in node.children:  # thead, tbody
        for tr in section.children:
            rows.append([_plain(cell) for cell in tr.children])
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    rows = [row + [""] * (width - len(row)) for row in rows]
    sizes = [max(len(row[col]) for row in rows) for col in range(width)]
    lines = [" | ".join(cell.ljust(sizes[col]) for col, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * size for size in sizes))
    return _code_block("\n".join(lines))


# -- inline -----------------------------------------------------------------------------


def _inline_of(node: SyntaxTreeNode, in_bold: bool = False) -> str:
    """The rendered inline content of a block node (its single `inline` child)."""
    return "".join(_inline(child, in_bold) for child in node.children)


def _inline(node: SyntaxTreeNode, in_bold: bool) -> str:
    kind = node.type
    if kind == "inline":
        return _inline_of(node, in_bold)
    if kind == "text":
        return escape_text(node.content)
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "code_inline":
        return f"`{escape(node.content)}`"
    if kind == "strong":
        inner = _inline_of(node, True)
        return inner if in_bold else f"*{inner}*"
    if kind == "em":
        return f"_{_inline_of(node, in_bold)}_"
    if kind == "s":
        return f"~{_inline_of(node, in_bold)}~"
    if kind == "link":
        href = str(node.attrs.get("href", ""))
        text = _inline_of(node, in_bold)
        if node.markup == "autolink" or text == escape(href):
            # An autolink's text is the URL (or the address of a mailto: link).
            return f"<{escape(href)}>" if not href.startswith("mailto:") else f"<{escape(href)}|{text}>"
        return f"<{escape(href)}|{text}>" if text else f"<{escape(href)}>"
    if kind == "image":
        src = str(node.attrs.get("src", ""))
        alt = escape(_plain(node))
        return f"<{escape(src)}|{alt}>" if alt else f"<{escape(src)}>"
    return escape_text(node.content)


def _plain(node: SyntaxTreeNode) -> str:
    """Text content only, without formatting (table cells, image descriptions)."""
    if node.type in ("text", "code_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    return "".join(_plain(child) for child in node.children)
