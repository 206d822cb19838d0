"""The README and docs/ stay true: the tolerance table is the code's, every command they
show exists, and so does every option those commands are shown with."""

import re

import pytest
from click.testing import CliRunner

from srn_port.cli import cli
from srn_port.core.tolerances import TOLERANCES

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TEXT = {p.relative_to(REPO).as_posix(): p.read_text() for p in PAGES}
#: Page lengths: the README is read in five minutes; the details are in docs/.
README_MAX_LINES = 250


def test_tolerance_table_matches_the_code():
    text = TEXT["docs/parity.md"]
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9.e-]+) \|", text, flags=re.M))
    assert set(rows) == set(TOLERANCES)
    for name, rel in rows.items():
        assert float(rel) == TOLERANCES[name].rel, name


def test_the_readme_is_short():
    assert len(TEXT["README.md"].splitlines()) <= README_MAX_LINES


def _help(command):
    res = CliRunner().invoke(cli, [command, "--help"])
    assert res.exit_code == 0, (command, res.output)
    return res.output


def _shown_commands():
    """(page, command, options) for every `srn-port CMD ...` line in a code block, and
    every `srn-port CMD` in inline code (options not checked there)."""
    for page, text in TEXT.items():
        in_code = False
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("```"):
                in_code = not in_code
                continue
            for cmd in re.findall(r"`srn-port ([a-z][a-z-]*)", line):
                yield page, cmd, ()
            stripped = line.strip()
            if stripped.startswith("$ "):
                stripped = stripped[2:]
            if not in_code or not stripped.startswith("srn-port "):
                continue
            # continuation lines of a command (ending in a backslash)
            j = i
            while lines[j].rstrip().endswith("\\") and j + 1 < len(lines):
                j += 1
                stripped += " " + lines[j].strip()
            code = stripped.split("#", 1)[0]
            words = code.split()
            if len(words) < 2 or words[1].startswith("-"):
                continue
            options = tuple(sorted({re.sub(r"[\]\[|,)(]", "", w).split("=")[0]
                                    for w in words[2:] if w.lstrip("[").startswith("--")}))
            yield page, words[1], options


SHOWN = sorted(set(_shown_commands()))


def test_every_page_shows_commands():
    assert {page for page, _, _ in SHOWN} >= {"README.md", "docs/convert.md", "docs/diff.md",
                                              "docs/deblur.md", "docs/train.md"}


@pytest.mark.parametrize("page,command,options", SHOWN,
                         ids=[f"{p}:{c}:{','.join(o)}" for p, c, o in SHOWN])
def test_documented_commands_and_options_exist(page, command, options):
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert re.search(rf"^\s+{re.escape(command)}\s", listed, flags=re.M), (page, command)
    if options:
        text = _help(command)
        missing = [o for o in options if not re.search(rf"{re.escape(o)}\b", text)]
        assert not missing, (page, command, missing)
