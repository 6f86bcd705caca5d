"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback)."""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch's can run to pages), for a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ""


class BlueberryError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class MapsError(BlueberryError):
    """A MaNGA MAPS file that cannot be used. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DatasetError(BlueberryError):
    """A dataset folder that is missing, incomplete or inconsistent."""


class RunError(BlueberryError):
    """A run directory that is missing, incomplete or inconsistent."""


class LabelsError(BlueberryError):
    """A labels file (CSV) or label store that cannot be used. The message names the file and the rows."""
