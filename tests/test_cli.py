"""The command line: every command answers --help with examples, quickly and without torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from train.cli import COMMANDS, main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m train {command}" in out and "examples:" in out


def test_help_does_not_import_torch():
    code = ("import sys; from train.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('torch', 'umap') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
