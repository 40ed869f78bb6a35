"""Transitional alias of :mod:`specsurgery.ops.split.mlprogram` (removed once no caller uses it)."""

from .split.mlprogram import split_program  # noqa: F401
