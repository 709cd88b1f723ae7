"""One exception base class; the CLI turns these into clear messages and exit codes."""

from __future__ import annotations


class ChatbatchError(Exception):
    """Something the user can fix; the message says what."""

    exit_code = 1


class ConfigError(ChatbatchError):
    """A setting is missing or wrong."""

    exit_code = 2


class NotFoundError(ChatbatchError):
    """A batch id or name that does not exist: a usage error."""

    exit_code = 2


class ArgumentError(ChatbatchError):
    """An argument the command cannot take (a missing input file, a batch name already used):
    a usage error."""

    exit_code = 2


class InputError(ChatbatchError):
    """A file that cannot be loaded; carries every problem found, each with file and line.
    A usage error: the command was given input it cannot take."""

    exit_code = 2

    def __init__(self, path: str, problems: list[tuple[int | None, str]], total_problems: int):
        self.path = path
        self.problems = problems
        self.total_problems = total_problems
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{self.path}: refused, nothing was loaded ({self.total_problems} problem(s))"]
        for line_no, reason in self.problems:
            where = f"{self.path}:{line_no}" if line_no is not None else self.path
            lines.append(f"  {where}: {reason}")
        hidden = self.total_problems - len(self.problems)
        if hidden > 0:
            lines.append(f"  … and {hidden} more")
        return "\n".join(lines)
