"""Benchmark tasks (filled in below)."""

from __future__ import annotations


def tasks() -> list:
    return []
