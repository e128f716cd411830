"""What a learner sees when a check runs: a short verdict with a hint, not a stack trace."""
from __future__ import annotations


class CheckFailed(AssertionError):
    """A graded check failed. The message is the hint; notebooks show only that."""

    def __init__(self, question: str, hint: str):
        self.question, self.hint = question, hint
        super().__init__(f"{question}: {hint}")

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: the hint is what helps.
        return [f"\x1b[31m✗ {self.question} failed\x1b[0m", f"  hint: {self.hint}"]


def expect(condition: bool, question: str, hint: str) -> None:
    """Raise :class:`CheckFailed` with ``hint`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(question, hint)


def passed(question: str, detail: str = "") -> None:
    print(f"✓ {question} passed" + (f" ({detail})" if detail else ""))
