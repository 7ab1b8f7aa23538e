"""Counts in messages: "1 epoch", "2 epochs", "1 batch" (the summary said "1 epochs")."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
