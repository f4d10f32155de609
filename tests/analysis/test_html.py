"""``bench.report --formats html``: report.html is one self-contained page, and a real headless browser (Debian's
Chromium, which .ci/run installs where it can) draws it without a JavaScript error and sorts its tables."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from bench import report as report_cli
from bench.analysis.html import inline, markdown_to_html

from test_report import write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CONSOLE = re.compile(r"CONSOLE[:(]|Uncaught")
"""A page's console output on Chromium's stderr (``INFO:CONSOLE:12] "..."``, older ``CONSOLE(12)``): the report
logs nothing, so any console line, and any uncaught exception, is a failure."""
CLICKS = """<script>
(function () {
  var table = document.querySelector("table"), heads = table.tHead.rows[0].cells, col = -1;
  for (var i = 0; i < heads.length; i++) { if (heads[i].textContent.indexOf("final eval reward") === 0) { col = i; } }
  function order() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[1].textContent; }).join("|");
  }
  ["asc", "desc", "reset"].forEach(function (name) { heads[col].click(); document.body.dataset[name] = order(); });
})();
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """report.html of a small synthetic results folder (3 seeds, an oom seed, an errored method), made by the CLI."""
    root = tmp_path_factory.mktemp("html")
    folder = write_results(root / "brightness", "mean-brightness")
    out = root / "rep"
    assert report_cli.main([str(folder), "--out", str(out), "--n-boot", "20", "--formats", "html"]) == 0
    return out / "report.html"


def test_page_is_self_contained_and_holds_the_report(page):
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and 'src="/' not in text and "url(" not in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    images = re.findall(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"', text)
    assert len(images) == text.count("<img ") >= 5  # curves, resources, images_: every figure embedded
    assert (page.parent / "reward_vs_step.png").is_file()  # html alone still writes the PNG figures it embeds
    # The summary (scoreboard) table, with its rows, before the other sections, as in report.md.
    assert '<h2 id="summary">Summary</h2>' in text and "<th scope=\"col\">final eval reward, mean [95% CI]</th>" in text
    assert "<td><strong>0.301 [" in text and "— (error: 1)" in text
    md = (page.parent / "report.md").read_text()
    order = [h for h in re.findall(r"^## (.+)$", md, re.M)]
    found = [text.index(f">{h}</h2>") for h in order]  # headings here are plain text
    assert found == sorted(found)
    # The commands: this report's, and the results folder's recorded bench.run command.
    assert "python -m bench.report" in text and "--formats html" in text
    assert "<pre><code>bench.run</code></pre>" in text
    assert "<table" in text and text.count("<table") == text.count("</table>")


def test_markdown_reader_escapes_and_renders_what_the_report_writes(tmp_path):
    md = ("# T\n\nGenerated from `a<b>`\n\n> **STAND-INS:**\n> - random <script>alert(1)</script>\n\n## S\n\n"
          "| a | b \\| c |\n|---|---|\n| *x* | 1 \\| 2 |\n\n"
          "- **k**: one\n  two\n- _`f_g`: kept (`runs/<id>/eval_*`) here._\n\n![missing.png](missing.png)\n")
    body, toc = markdown_to_html(md, tmp_path)
    assert toc == [("s", "S")] and "<script>" not in body and "&lt;script&gt;" in body
    assert "<blockquote><p><strong>STAND-INS:</strong></p>\n<ul><li>random" in body
    assert "<th scope=\"col\">b | c</th>" in body and "<td><em>x</em></td><td>1 | 2</td>" in body
    assert "<li><strong>k</strong>: one two</li>" in body
    assert "<em><code>f_g</code>: kept (<code>runs/&lt;id&gt;/eval_*</code>) here.</em>" in body
    assert 'class="missing"' in body and "<img" not in body
    assert inline("[x](https://example.com) [y](#s)") == 'x (<code>https://example.com</code>) <a href="#s">y</a>'


def run_chromium(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=3000", f"--user-data-dir={tmp_path / 'profile'}",
                           *args, url], capture_output=True, text=True, timeout=90)  # fmt: skip


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs Debian's "
                                                             "chromium where apt is available)")


@needs_chromium
def test_the_error_check_catches_a_page_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>noSuchFunction();</script></body></html>")
    done = run_chromium(bad.as_uri(), tmp_path, "--dump-dom")
    assert done.returncode == 0
    assert any("Uncaught ReferenceError" in line for line in console_errors(done.stderr)), done.stderr[-2000:]


@needs_chromium
def test_browser_draws_the_page_without_errors(page, tmp_path):
    shot = tmp_path / "report.png"
    done = run_chromium(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_errors(done.stderr) == []
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # not blank: text, tables and a figure drew


@needs_chromium
def test_tables_are_wired_and_sort_numerically(page, tmp_path):
    clicking = tmp_path / "clicking.html"
    clicking.write_text(page.read_text(encoding="utf-8").replace("</body>", CLICKS + "</body>"), encoding="utf-8")
    done = run_chromium(clicking.as_uri(), tmp_path, "--dump-dom")
    assert done.returncode == 0 and console_errors(done.stderr) == [], done.stderr[-2000:]
    dom = done.stdout
    assert dom.count('data-sortable="ready"') == page.read_text(encoding="utf-8").count("<table") >= 3
    got = {k: v.split("|") for k, v in re.findall(r'data-(asc|desc|reset)="([^"]*)"', dom)}
    start = next(m for m in got["reset"] if m.startswith("start"))
    # The final-reward column sorts by each cell's first number ("0.301 [0.300, 0.301]"); "— (error: 1)" stays last.
    assert got["asc"] == [start, "alignprop", "ddpo", "rwr"], got
    assert got["desc"] == ["ddpo", "alignprop", start, "rwr"], got
    assert got["reset"] == ["ddpo", "alignprop", start, "rwr"], got  # third click: the report's own order
