"""``report.html``: the report folder as one self-contained page to open in a browser (``--formats html``).

The page is report.md rendered section by section (headings, paragraphs, lists, quotes, tables, figures), with a
contents list on top and, at the end, the commands that made the results: each results folder's recorded
``bench.run`` command line (manifest.json) and the ``bench.report`` command that made this report. Nothing is
fetched from anywhere: the figures are embedded as base64 PNG data URIs, summary.csv and time_to_target.csv as
data-URI downloads, and the style sheet and the table-sorting script are inline. Every table sorts by a click on a
column header (ascending, descending, then the report's own order again): a cell that starts with a number (after
``<=``/``>=``) sorts by it, so ``0.244 [0.084, 0.424]`` sorts as 0.244; empty and ``—`` cells stay last.

The markdown reader understands what ``bench.analysis.report`` writes, not all of markdown: ``#`` headings, pipe
tables, ``- `` lists (indented continuation lines), ``>`` quotes, ``![alt](file)`` figure lines, fenced code, and
inline code, ``**bold**``, ``*italic*``/``_italic_`` and ``[text](link)``.
"""

from __future__ import annotations

import base64
import html
import re
import shlex
from pathlib import Path

from bench.analysis.results import read_manifest

IMAGE_LINE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
CELL_SPLIT = re.compile(r"(?<!\\)\|")
RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
PLACEHOLDER = re.compile("\0(\\d+)\0")
INLINE = re.compile(r"!?\[([^\]]+)\]\(([^)\s]+)\)|\*\*(.+?)\*\*|(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"
                    r"|(?<![\w_])_(?!\s)(.+?)(?<!\s)_(?![\w_])")
WRAP = 48
"""Table cells longer than this many characters wrap; shorter ones stay on one line (the table scrolls sideways)."""
WRAP_TD = '<td class="wrap">'
MIME = {".png": "image/png", ".csv": "text/csv"}
DATA_FILES = ("summary.csv", "time_to_target.csv")

STYLE = """
:root { color-scheme: light; --line: #d0d7de; --head: #f6f8fa; --muted: #57606a; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.8em; border-bottom: 1px solid var(--line); padding-bottom: .3em; }
h2 { font-size: 1.4em; border-bottom: 1px solid var(--line); padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.15em; margin-top: 1.5em; }
code { font: .88em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eff1f3;
       padding: .1em .3em; border-radius: 4px; }
pre { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px;
      overflow-x: auto; white-space: pre-wrap; overflow-wrap: anywhere; }
pre code { background: none; padding: 0; }
blockquote { margin: 1em 0; padding: .2em 1em; border-left: 4px solid #d4a72c; background: #fff8c5; }
nav.toc { background: var(--head); border: 1px solid var(--line); border-radius: 6px; padding: 6px 16px; }
nav.toc ol { margin: .3em 0; padding-left: 1.4em; columns: 2; }
.scroll { overflow-x: auto; max-width: 100%; margin: 1em 0; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; font-size: .9em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 22em; }
tr > :first-child { border-left: none; } tr > :last-child { border-right: none; }
thead tr:first-child > * { border-top: none; } tbody tr:last-child > * { border-bottom: none; }
th { background: var(--head); }
th.sortable { cursor: pointer; user-select: none; }
th.sortable::after { content: " \\2195"; color: #8c959f; }
th[aria-sort="ascending"]::after { content: " \\25B2"; color: #1f2328; }
th[aria-sort="descending"]::after { content: " \\25BC"; color: #1f2328; }
tbody tr:nth-child(even) { background: #f9fafb; }
tbody tr:hover { background: #eef6ff; }
figure { margin: 1em 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption, .meta { color: var(--muted); font-size: .85em; }
.missing { color: #cf222e; }
"""

SCRIPT = """
(function () {
  "use strict";
  var NUMBER = /^[\\s*~\\u2248<>=\\u2264\\u2265]*([-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?)/;
  function key(cell) {
    var text = (cell ? cell.textContent : "").trim();
    if (text === "" || text.charAt(0) === "\\u2014") { return null; }
    var m = NUMBER.exec(text);
    return m ? { num: parseFloat(m[1]), text: text } : { num: null, text: text };
  }
  function compare(a, b) {
    if (a.num !== null && b.num !== null && a.num !== b.num) { return a.num - b.num; }
    if (a.num !== null && b.num === null) { return -1; }
    if (a.num === null && b.num !== null) { return 1; }
    return a.text.localeCompare(b.text, undefined, { numeric: true, sensitivity: "base" });
  }
  function wire(table) {
    var body = table.tBodies[0];
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    if (!body) { return; }
    Array.prototype.forEach.call(body.rows, function (row, i) { row.dataset.order = i; });
    Array.prototype.forEach.call(heads, function (th, col) {
      th.classList.add("sortable");
      th.title = "sort by this column (click again: reverse, then the report's order)";
      th.addEventListener("click", function () {
        var state = th.getAttribute("aria-sort");
        var next = state === "ascending" ? "descending" : state === "descending" ? "none" : "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        var rows = Array.prototype.slice.call(body.rows).map(function (row) {
          return { row: row, key: key(row.cells[col]), order: Number(row.dataset.order) };
        });
        rows.sort(function (a, b) {
          if (next === "none") { return a.order - b.order; }
          if (a.key === null || b.key === null) {
            return (a.key === null) - (b.key === null) || a.order - b.order;
          }
          var c = compare(a.key, b.key);
          return (next === "descending" ? -c : c) || a.order - b.order;
        });
        if (next !== "none") { th.setAttribute("aria-sort", next); }
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
    table.setAttribute("data-sortable", "ready");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table"), wire);
})();
"""


def write_html(folder: Path, markdown_text: str, directories, command: str) -> Path:
    """Write ``folder/report.html`` from report.md's text, the figures in ``folder`` and the results folders'
    manifests; returns its path."""
    folder = Path(folder)
    body, toc = markdown_to_html(markdown_text, folder)
    title = next((line[2:].strip() for line in markdown_text.splitlines() if line.startswith("# ")), "Report")
    toc.append(("commands", "Commands"))
    nav = ('<nav class="toc"><strong>Contents</strong><ol>'
           + "".join(f'<li><a href="#{ident}">{html.escape(text)}</a></li>' for ident, text in toc)
           + "</ol>" + data_links(folder) + "</nav>")
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", "<main>",
             body.replace("<!--toc-->", nav, 1) if "<!--toc-->" in body else nav + body,
             commands_html(directories, command), "</main>", f"<script>{SCRIPT}</script>", "</body>", "</html>"]
    path = folder / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def report_command(directories, out, *, seed: int, n_boot: int, formats, reference: str) -> str:
    """The ``python -m bench.report`` command equivalent to a ``build_report`` call (when no command line is given)."""
    args = ["python", "-m", "bench.report", *map(str, directories), "--out", str(out), "--seed", str(seed),
            "--n-boot", str(n_boot), "--formats", ",".join(formats), "--reference", reference]
    return shlex.join(args)


def commands_html(directories, command: str) -> str:
    """The Commands section: this report's command, then each results folder's recorded command and provenance."""
    parts = ['<h2 id="commands">Commands</h2>', "<p>This report:</p>", code_block(command)]
    for directory in directories:
        manifest = read_manifest(Path(directory))
        line = manifest.get("command_line")
        if not line and isinstance(manifest.get("command"), list):
            line = shlex.join(str(a) for a in manifest["command"])
        parts.append(f"<h3><code>{html.escape(str(directory))}</code></h3>")
        parts.append(code_block(str(line)) if line else '<p class="missing">no command recorded (manifest.json)</p>')
        meta = [f"{name} {html.escape(str(manifest[key]))}" for key, name in
                (("git_commit", "commit"), ("started", "started"), ("finished", "finished"), ("device", "device"))
                if manifest.get(key)]
        if meta:
            parts.append(f'<p class="meta">{"; ".join(meta)}</p>')
    return "\n".join(parts)


def code_block(text: str) -> str:
    return f"<pre><code>{html.escape(text)}</code></pre>"


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def data_links(folder: Path) -> str:
    """Download links for the report's CSV files, embedded as data URIs ("" when there are none)."""
    links = [f'<a download="{name}" href="{data_uri(folder / name)}">{name}</a>'
             for name in DATA_FILES if (folder / name).is_file()]
    return f'<p class="meta">Data (embedded): {" · ".join(links)}</p>' if links else ""


def markdown_to_html(text: str, folder: Path) -> tuple[str, list[tuple[str, str]]]:
    """report.md's markdown as HTML (figures read from ``folder``), and the (id, text) of each ``##`` heading. A
    ``<!--toc-->`` marker stands before the first ``##`` heading, where the contents list goes."""
    lines = text.splitlines()
    out, toc, used = [], [], set()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
        elif stripped.startswith(("```", "~~~")):
            fence, i, block = stripped[:3], i + 1, []
            while i < len(lines) and not lines[i].strip().startswith(fence):
                block.append(lines[i])
                i += 1
            out.append(code_block("\n".join(block)))
            i += 1
        elif match := HEADING.match(stripped):
            level, content = len(match.group(1)), match.group(2).strip()
            ident = anchor(content, used)
            if level == 2:
                if not toc:
                    out.append("<!--toc-->")
                toc.append((ident, plain(content)))
            out.append(f'<h{level} id="{ident}">{inline(content)}</h{level}>')
            i += 1
        elif stripped.startswith("|") and i + 1 < len(lines) and RULE.match(lines[i + 1].strip()):
            rows = [stripped, lines[i + 1].strip()]
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i].strip())
                i += 1
            out.append(table_html(rows))
        elif match := IMAGE_LINE.match(stripped):
            out.append(figure_html(match.group(1), match.group(2), folder))
            i += 1
        elif stripped.startswith(">"):
            block = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                block.append(re.sub(r"^\s*>\s?", "", lines[i]))
                i += 1
            inner, _ = markdown_to_html("\n".join(block), folder)
            out.append(f"<blockquote>{inner}</blockquote>")
        elif re.match(r"^[-*] ", stripped):
            items = []
            while i < len(lines) and lines[i].strip():
                if not items or re.match(r"^\s?[-*] ", lines[i]):
                    items.append(lines[i].strip()[2:])
                elif items and lines[i].startswith(" "):
                    items[-1] += " " + lines[i].strip()
                else:
                    break
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
        else:
            block, i = [stripped], i + 1
            while i < len(lines) and lines[i].strip() and not starts_block(lines, i):
                block.append(lines[i].strip())
                i += 1
            out.append(f"<p>{inline(' '.join(block))}</p>")
    return "\n".join(out), toc


def starts_block(lines: list[str], i: int) -> bool:
    """Whether line ``i`` opens something other than a paragraph (so it ends the paragraph above it)."""
    s = lines[i].strip()
    return bool(HEADING.match(s) or IMAGE_LINE.match(s) or s.startswith((">", "```", "~~~")) or re.match(r"^[-*] ", s)
                or (s.startswith("|") and i + 1 < len(lines) and RULE.match(lines[i + 1].strip())))


def table_html(rows: list[str]) -> str:
    """A pipe table (header, rule, rows) as a sortable HTML table inside a horizontally scrolling box; long cells
    (over ``WRAP`` characters) wrap, the rest stay on one line."""
    head = cells(rows[0])
    body = [cells(r) for r in rows[2:]]
    parts = ['<div class="scroll"><table>', "<thead><tr>"]
    parts += [f'<th scope="col">{inline(c)}</th>' for c in head]
    parts.append("</tr></thead><tbody>")
    for row in body:
        row = (row + [""] * len(head))[:max(len(head), len(row))]
        parts.append("<tr>" + "".join((WRAP_TD if len(c) > WRAP else "<td>") + inline(c) + "</td>" for c in row)
                     + "</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def cells(row: str) -> list[str]:
    """A pipe-table row's cells: split on unescaped ``|``, ``\\|`` unescaped, outer pipes dropped."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in CELL_SPLIT.split(row)]


def figure_html(alt: str, src: str, folder: Path) -> str:
    """A figure line as an embedded PNG (data URI), or a visible note when the file is missing."""
    path = folder / src
    if "/" in src or "\\" in src or path.suffix.lower() != ".png" or not path.is_file():
        return f'<p class="missing">figure {html.escape(src)} not found in the report folder</p>'
    name = html.escape(src)
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(alt)}">'
            f"<figcaption>{name}</figcaption></figure>")


def inline(text: str) -> str:
    """Inline markdown (code, links, bold, italic) as HTML, every piece of text escaped. Code spans are taken out
    first, as markdown does, so a ``_`` or ``*`` inside one never opens or closes emphasis."""
    codes: list[str] = []

    def keep(match) -> str:
        codes.append(match.group(2).strip())
        return f"\0{len(codes) - 1}\0"

    out = emphasis(CODE_SPAN.sub(keep, text))
    return PLACEHOLDER.sub(lambda m: f"<code>{html.escape(codes[int(m.group(1))])}</code>", out)


def emphasis(text: str) -> str:
    out, pos = [], 0
    for match in INLINE.finditer(text):
        out.append(html.escape(text[pos:match.start()]))
        label, href, bold, star, under = match.groups()
        if label is not None:
            out.append(link(label, href))
        elif bold is not None:
            out.append(f"<strong>{emphasis(bold)}</strong>")
        else:
            out.append(f"<em>{emphasis(star if star is not None else under)}</em>")
        pos = match.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def link(label: str, href: str) -> str:
    """An in-page link (``#anchor``) stays a link; any other target (a file beside report.md, a web address) is shown
    as text, so the page references nothing outside itself."""
    if href.startswith("#"):
        return f'<a href="{html.escape(href)}">{emphasis(label)}</a>'
    return f"{emphasis(label)} (<code>{html.escape(href)}</code>)"


def plain(text: str) -> str:
    """Heading text without its markdown markers (for the contents list)."""
    return re.sub(r"[`*]|(?<!\w)_|_(?!\w)", "", text)


def anchor(text: str, used: set[str]) -> str:
    """A unique id for a heading, GitHub-style: lower case, spaces to ``-``, punctuation dropped."""
    base = re.sub(r"[^\w\- ]", "", plain(text).lower()).strip().replace(" ", "-") or "section"
    ident, n = base, 1
    while ident in used:
        n += 1
        ident = f"{base}-{n}"
    used.add(ident)
    return ident
