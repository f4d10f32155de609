"""The documentation against the repository: README.md, CHANGELOG.md and docs/**/*.md.

- README.md stays short (at most 200 lines) and links every page under docs/;
- every relative link (and image) in those files points to an existing file, and a ``#anchor`` to a heading there;
- every ``python -m bench.<tool> ...`` (and ``python -m rewards.<tool> ...``) command they quote, in a code block or
  in inline code, is accepted by that tool's argument parser, and the names it gives (methods, ``--set`` targets,
  preset, reward, model) are ones ``bench.run`` knows. The tools are never run: a module-level ``build_parser()`` is
  used where the tool has one; otherwise the tool's ``main`` is entered with ``ArgumentParser.parse_args`` replaced by
  one that stops right after parsing (nothing a tool's ``main`` does before it parses is heavy);
- every ``make <target>`` they quote exists in the Makefile.

Usage synopses are read as commands with every optional part present: ``[``/``]`` are dropped, ``...`` too, and of
``a|b`` alternatives the first is taken. Commands built with ``$(...)`` are skipped with the reason; ``$VAR`` becomes
``VAR``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").rglob("*.md"))
PAGES = [README, *([REPO / "CHANGELOG.md"] if (REPO / "CHANGELOG.md").is_file() else []), *DOCS]
MAX_README_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
COMMAND = re.compile(r"(?:^|(?<=[\s(;&|]))(?:[\w./-]*/)?python3?\s+-m\s+((?:bench|rewards)(?:\.\w+)*)(?=\s|$)(.*)", re.S)
MAKE = re.compile(r"(?:^|(?<=[\s(;&|]))make((?:\s+[\w.-]+(?:=\S*)?)+)")
SEPARATOR = re.compile(r"\s(?:&&|\|\||;|\|)\s")
"""Shell separators between two commands on one line (``a|b`` without spaces is a synopsis' alternatives)."""
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>&1", "2>", "&>"}
PASSTHROUGH = {"bench.tune": "bench.run"}
"""Tools that hand the flags they do not know to another tool's parser (``bench.tune`` forwards them to
``bench.run``)."""
TUNE_REFUSES = ("--config-from", "--dry-run")
"""Flags ``bench.tune`` refuses among those it forwards (it makes its own runs)."""


# -- reading markdown -----------------------------------------------------------------------------------------------


@dataclass
class Quote:
    """A command found in a page: where, and the text from ``python -m`` on."""

    page: Path
    line: int
    module: str
    rest: str
    in_block: bool

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def text(self) -> str:
        return f"python -m {self.module}{self.rest}".strip()


def split_page(text: str) -> tuple[list[tuple[int, str, str]], str]:
    """(fenced code blocks as (first line number, language, text), the prose with those blocks blanked out so that
    line numbers still count)."""
    blocks, prose, lines = [], [], text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang, start = match.group(1), match.group(2).lower(), i + 2
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((start, lang, "\n".join(body)))
        prose.extend([""] * (len(body) + 2))
        i += 1
    return blocks, "\n".join(prose)


def without_inline_code(prose: str) -> str:
    """The prose with inline code spans blanked (newlines kept): links inside code are not links."""
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def logical_lines(code: str) -> list[tuple[int, str]]:
    """A code block's lines with backslash continuations joined, each with its offset in the block."""
    out, current, start = [], "", None
    for n, line in enumerate(code.splitlines()):
        if start is None:
            start = n
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append((start, current + line))
        current, start = "", None
    if current:
        out.append((start, current))
    return out


def strip_comment(line: str) -> str:
    """A shell line without its ``# comment`` (a ``#`` after whitespace, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def quotes(page: Path) -> list[Quote]:
    """Every ``python -m bench...`` / ``python -m rewards...`` command quoted in ``page``."""
    text = page.read_text()
    blocks, prose = split_page(text)
    found = []
    for start, lang, code in blocks:
        if lang in ("python", "py", "pycon", "json", "toml", "yaml"):
            continue
        for offset, line in logical_lines(code):
            for piece in SEPARATOR.split(strip_comment(line)):
                for match in COMMAND.finditer(piece):
                    found.append(Quote(page, start + offset, match.group(1), match.group(2), True))
    for span in INLINE_CODE.finditer(prose):
        for piece in SEPARATOR.split(span.group(2).replace("\n", " ")):
            for match in COMMAND.finditer(piece):
                found.append(Quote(page, line_of(prose, span.start()), match.group(1), match.group(2), False))
    return found


def argv_of(quote: Quote) -> list[str] | str:
    """The argument list of a quoted command (a synopsis read with every optional part present), or why it is
    skipped."""
    rest = quote.rest
    if "$(" in rest or "`" in rest:
        return "built with a shell substitution ($(...)): its arguments are only known when the shell runs it"
    rest = re.sub(r"\$\{?(\w+)\}?", r"\1", rest)
    tokens = shlex.split(rest, comments=True)  # ValueError on an unbalanced quote: check() reports it
    for i, token in enumerate(tokens):
        if token in SHELL_OPERATORS:
            tokens = tokens[:i]
            break
    argv = []
    for token in tokens:
        token = token.replace("[", "").replace("]", "")
        if token in ("", "...", "\u2026"):
            continue
        if "|" in token and not token.startswith("-"):
            token = token.split("|")[0]
        argv.append(token)
    return argv


# -- parsing with the tools' own parsers ----------------------------------------------------------------------------


class _Parsed(BaseException):
    """Raised by the stand-in ``parse_args`` right after a successful parse (a BaseException: no ``except
    Exception`` in a tool's ``main`` and no ``@command`` wrapper catches it)."""

    def __init__(self, namespace, extras=()):
        super().__init__()
        self.namespace, self.extras = namespace, list(extras)


PARSERS: list[argparse.ArgumentParser] = []
"""The parsers ``stop_after_parsing`` saw, latest last."""


@contextlib.contextmanager
def stop_after_parsing(monkeypatch):
    """``ArgumentParser.parse_args`` / ``parse_known_args`` parse as usual, then raise ``_Parsed`` instead of
    returning, so a tool's ``main`` never gets past its parser."""
    original_args, original_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    inside = []

    def parse_args(self, args=None, namespace=None):
        PARSERS.append(self)
        inside.append(True)
        try:
            result = original_args(self, args, namespace)
        finally:
            inside.pop()
        raise _Parsed(result)

    def parse_known_args(self, args=None, namespace=None):
        if inside:  # parse_args calls parse_known_args itself
            return original_known(self, args, namespace)
        result, extras = original_known(self, args, namespace)
        raise _Parsed(result, extras)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", parse_known_args)
        yield


def tool_module(name: str) -> str:
    """``bench.shapeworld`` runs ``bench.shapeworld.__main__``."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise LookupError(f"no module {name!r}")
    return f"{name}.__main__" if spec.submodule_search_locations is not None else name


def parse(name: str, argv: list[str], monkeypatch) -> tuple[argparse.Namespace | None, list[str], str | None]:
    """(namespace, flags left for another tool, error) of ``python -m name argv`` by the tool's own parser."""
    module = importlib.import_module(tool_module(name))
    out, err = io.StringIO(), io.StringIO()
    extras: list[str] = []
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if hasattr(module, "build_parser"):
                parser = module.build_parser()
                if name in PASSTHROUGH:
                    namespace, extras = parser.parse_known_args(argv)
                else:
                    namespace = parser.parse_args(argv)
            else:
                with stop_after_parsing(monkeypatch):
                    module.main(argv)
                return None, [], f"{name}.main returned without parsing its arguments with argparse"
        except _Parsed as parsed:
            namespace, extras = parsed.namespace, parsed.extras
        except SystemExit as exc:
            if exc.code in (0, None):  # --help
                return None, [], None
            message = [line for line in err.getvalue().splitlines() if line.strip()]
            return None, [], message[-1] if message else f"exit code {exc.code}"
    return namespace, extras, None


def run_names_error(namespace: argparse.Namespace) -> str | None:
    """What ``bench.run``'s planner would refuse by name alone: unknown methods, a ``--set`` naming a method not in
    ``--methods``, an unknown preset, reward or model."""
    from bench.core.errors import UsageError
    from bench.core.models import check_model
    from bench.harness.presets import PRESET_NAMES
    from bench.harness.spec import parse_list, parse_sets
    from methods import METHODS
    from rewards import check_reward_spec

    try:
        if getattr(namespace, "preset", None) and namespace.preset not in PRESET_NAMES:
            return f"unknown preset {namespace.preset!r}; valid: {', '.join(PRESET_NAMES)}"
        if getattr(namespace, "methods", None):
            methods = parse_list(namespace.methods, "methods")
            unknown = [m for m in methods if m not in METHODS]
            if unknown:
                return f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(METHODS.names())}"
            parse_sets(getattr(namespace, "sets", None) or [], methods)
        reward = getattr(namespace, "reward", None)
        if reward and ":" not in reward:  # plug-ins in the docs are examples (my_module:MyReward)
            check_reward_spec(reward)
        if getattr(namespace, "model", None):
            check_model(namespace.model)
    except UsageError as exc:
        return str(exc)
    return None


def check(quote: Quote, monkeypatch) -> str | None:
    """None when the quoted command is accepted, else what is wrong with it."""
    try:
        argv = argv_of(quote)
    except ValueError as exc:
        return f"cannot be split like a shell line ({exc})"
    if isinstance(argv, str):
        pytest.skip(f"{quote.where}: {quote.text}: {argv}")
    if not argv and not quote.in_block:  # `python -m bench.report` in prose names the tool
        try:
            tool_module(quote.module)
        except LookupError as exc:
            return str(exc)
        return None
    if quote.module == "bench.worker":  # no flags: python -m bench.worker RUN_DIR
        return None if len(argv) == 1 and not argv[0].startswith("-") else "bench.worker takes exactly one RUN_DIR"
    try:
        namespace, extras, error = parse(quote.module, argv, monkeypatch)
    except LookupError as exc:
        return str(exc)
    if error:
        return error
    if quote.module in PASSTHROUGH:
        refused = [a for a in extras if a.split("=")[0] in TUNE_REFUSES]
        if refused:
            return f"{quote.module} refuses {', '.join(refused)}"
        forwarded = ["--methods", namespace.methods, "--reward", namespace.reward, *extras]
        namespace, _, error = parse(PASSTHROUGH[quote.module], forwarded, monkeypatch)
        if error:
            return f"flags forwarded to {PASSTHROUGH[quote.module]}: {error}"
    if namespace is not None and quote.module in ("bench.run", "bench.tune"):
        return run_names_error(namespace)
    return None


# -- the tests ------------------------------------------------------------------------------------------------------


ALL_QUOTES = [q for page in PAGES for q in quotes(page)]


def test_readme_is_short_and_links_every_docs_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it at most {MAX_README_LINES}"
    _, prose = split_page(README.read_text())
    targets = {(README.parent / t.split("#")[0]).resolve() for t in LINK.findall(without_inline_code(prose))
               if t.split("#")[0] and "://" not in t}
    assert DOCS, "docs/ holds no page"
    missing = [str(p.relative_to(REPO)) for p in DOCS if p.resolve() not in targets]
    assert not missing, f"README.md does not link these docs pages: {missing}"
    linked_docs = [t for t in targets if (REPO / "docs") in t.parents]
    absent = [str(t.relative_to(REPO)) for t in linked_docs if not t.is_file()]
    assert not absent, f"README.md links docs pages that do not exist: {absent}"


def github_slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor of a heading: text without markup, lower case, punctuation dropped, spaces to hyphens,
    repeats numbered."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def anchors(page: Path) -> set[str]:
    _, prose = split_page(page.read_text())
    seen: dict[str, int] = {}
    return {github_slug(m.group(2), seen) for m in map(HEADING.match, prose.splitlines()) if m}


def broken_links(pages: list[Path]) -> list[str]:
    """Every relative link or image in ``pages`` whose file, or whose ``#anchor`` in a markdown file, is missing."""
    broken = []
    for page in pages:
        _, prose = split_page(page.read_text())
        text = without_inline_code(prose)
        for match in [*LINK.finditer(text), *REFERENCE_LINK.finditer(text)]:
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.name if REPO not in page.parents else page.relative_to(REPO)}:{line_of(text, match.start())}"
            if not resolved.exists():
                broken.append(f"{where}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where}: {target} (no heading #{anchor} in {resolved.name})")
    return broken


def test_every_relative_link_points_to_an_existing_file_and_heading():
    broken = broken_links(PAGES)
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# The `bench.run` page: flags\n\n## Flags\n\n## Flags\n")
    (tmp_path / "page.md").write_text(
        "# Page\n\n[ok](other.md#the-benchrun-page-flags) [ok](other.md#flags-1) [ok](#page) [web](https://x.org/y)\n"
        "[missing](nowhere.md) ![img](img/none.png) [bad anchor](other.md#nope) `[in code](nowhere.md)`\n\n"
        "```\n[in a block](nowhere.md)\n```\n")
    broken = broken_links([tmp_path / "page.md"])
    assert broken == ["page.md:4: nowhere.md (no such file)", "page.md:4: img/none.png (no such file)",
                      "page.md:4: other.md#nope (no heading #nope in other.md)"], broken


def test_the_docs_quote_commands():
    modules = {q.module for q in ALL_QUOTES}
    assert {"bench.run", "bench.report", "bench.tune", "bench.export", "bench.compare"} <= modules, modules


@pytest.mark.parametrize("quote", ALL_QUOTES, ids=lambda q: f"{q.where}:{q.module}")
def test_quoted_command_is_accepted_by_its_parser(quote, monkeypatch):
    error = check(quote, monkeypatch)
    assert error is None, f"{quote.where}: `{quote.text}` is refused: {error}"


@pytest.mark.parametrize("text, refusal", [
    ("python -m bench.report DIR --no-such-flag", "unrecognized arguments: --no-such-flag"),
    ("python -m bench.run --methods alignprop --n-boot 3", "unrecognized arguments: --n-boot"),
    ("python -m bench.run --methods alignprop,no-such-method --reward mean-brightness", "no-such-method"),
    ("python -m bench.run --methods alignprop --set ddpo.lr=1e-3", "not in --methods"),
    ("python -m bench.tune --methods rwr --reward mean-brightness --grid lr=1e-3 --no-such-flag", "--no-such-flag"),
    ("python -m bench.trl_overhead --repeats many", "invalid int value"),
    ("python -m bench.shapeworld.train_flow --minutes 25", "unrecognized arguments: --minutes"),
    ("python -m bench.compare --baseline results/baselines/ci-smoke.json", "required: NEW_DIR"),
    ("python -m bench.no_such_tool --flag", "no module"),
])
def test_the_check_refuses_a_wrong_command(text, refusal, monkeypatch, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"Run `{text}` or:\n\n```\n{text}\n```\n")
    found = quotes(page)
    assert len(found) == 2 and {q.in_block for q in found} == {True, False}
    for quote in found:
        error = check(quote, monkeypatch)
        assert error is not None and refusal in error, (quote.text, error)


def test_synopses_read_with_every_optional_part():
    quote = Quote(README, 1, "bench.report", " DIR [DIR ...] [--out OUT_DIR] [--formats png,pdf]  # a comment", True)
    assert argv_of(quote) == ["DIR", "DIR", "--out", "OUT_DIR", "--formats", "png,pdf"]
    quote = Quote(README, 1, "bench.interpolate", " RUN_A RUN_B|base [--alphas 0,1] > log", True)
    assert argv_of(quote) == ["RUN_A", "RUN_B", "--alphas", "0,1"]
    assert isinstance(argv_of(Quote(README, 1, "bench.report", " $(ls -d results/*)", True)), str)


TOOLS = ["bench.run", "bench.tune", "bench.report", "bench.compare", "bench.export", "bench.interpolate",
         "bench.memory_vs_steps", "bench.memory_ladder", "bench.gpu_check", "bench.trl_overhead", "bench.build_time",
         "bench.shapeworld", "bench.shapeworld.train", "bench.shapeworld.train_aesthetic",
         "bench.shapeworld.train_flow", "rewards.compress", "bench.suite.report"]
"""Every command people type (``bench.worker`` has no flags)."""


def tool_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    module = importlib.import_module(tool_module(name))
    if hasattr(module, "build_parser"):
        return module.build_parser()
    PARSERS.clear()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            with stop_after_parsing(monkeypatch):
                module.main([])
        except (_Parsed, SystemExit):  # SystemExit: a required argument is missing; the parser was still seen
            pass
    assert PARSERS, f"{name}.main built no argparse parser"
    return PARSERS[-1]


@pytest.mark.parametrize("name", TOOLS)
def test_cli_reference_names_every_flag_of_every_tool(name, monkeypatch):
    sections = re.split(r"^## ", (REPO / "docs" / "cli.md").read_text(), flags=re.M)
    heading = "bench.shapeworld" if name.startswith("bench.shapeworld") else name
    section = next((s for s in sections if s.startswith(f"`python -m {heading}`")), None)
    assert section is not None, f"docs/cli.md has no section `python -m {heading}`"
    flags = [o for a in tool_parser(name, monkeypatch)._actions if a.help != argparse.SUPPRESS
             for o in a.option_strings if o.startswith("--") and o != "--help"]
    missing = [f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", section)]
    assert not missing, f"docs/cli.md's section on {name} does not name {missing}"


def test_every_quoted_make_target_exists():
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))
    unknown = []
    for page in PAGES:
        blocks, prose = split_page(page.read_text())
        spans = [span.group(2) for span in INLINE_CODE.finditer(prose)]
        for code in [*spans, *(c for _, lang, c in blocks if lang not in ("python", "py"))]:
            for match in MAKE.finditer(code):
                words = [w for w in match.group(1).split() if "=" not in w]
                unknown += [f"{page.relative_to(REPO)}: make {w}" for w in words[:1] if w not in targets]
    assert not unknown, f"make targets not in the Makefile: {unknown}"
