"""The README stays true: its tolerance table is the code's, its commands exist."""

import re

from click.testing import CliRunner

from srn_port.cli import cli
from srn_port.core.tolerances import TOLERANCES

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_tolerance_table_matches_the_code():
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([0-9.e-]+) \|", README, flags=re.M))
    assert set(rows) == set(TOLERANCES)
    for name, rel in rows.items():
        assert float(rel) == TOLERANCES[name].rel, name


def test_documented_commands_exist():
    listed = CliRunner().invoke(cli, ["--help"]).output
    # in code blocks (lines starting with it) and `inline code`
    for command in set(re.findall(r"(?:^|`)srn-port ([a-z]+)", README, flags=re.M)):
        assert command in listed, command
