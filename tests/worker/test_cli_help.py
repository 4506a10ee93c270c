"""``--help`` reads whole at 80 columns: every option name in full, every line within the
width, each command's first line saying what it does today."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from worker.cli import app

WIDTH = 80


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(group, "commands"):  # a group (Typer vendors its own click classes)
        for name, command in group.commands.items():
            yield from _commands(command, (*path, name))


ROOT = typer.main.get_command(app)
COMMANDS = list(_commands(ROOT))


def _help(path: tuple[str, ...]) -> str:
    done = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)})
    assert done.exit_code == 0, done.output
    return done.output


def _command(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "cxr-triage")
def test_every_option_name_is_shown_whole_within_80_columns(path: tuple[str, ...]) -> None:
    """Rich's option table cut ``--validation-fraction`` to ``--validation-fr…`` (issue 21)."""
    text = _help(path)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    for param in _command(path).params:
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("-"):
                assert name in text, f"{' '.join(path)}: {name} not shown whole"


@pytest.mark.parametrize("path", [p for p in COMMANDS if hasattr(_command(p), "commands")])
def test_each_command_s_summary_is_whole_in_the_list(path: tuple[str, ...]) -> None:
    """Click cut each summary at the terminal's edge ("calibrate it and...")."""
    commands = _help(path).split("Commands:", 1)[1]
    assert "..." not in commands
    for name, command in _command(path).commands.items():
        summary = " ".join(command.get_short_help_str(limit=1000).split())
        assert summary in " ".join(commands.split()), name


def test_watch_says_what_it_sends() -> None:
    """One task per admitted batch, not per file, since the batching change."""
    text = " ".join(_help(("watch",)).split())
    assert "one task per new stable file" not in text
    assert "batch" in text
