"""Transitional alias of the ML Program paths of :mod:`specsurgery.ops.link` (removed once no caller uses it)."""

from .link import link_stage, unlink  # noqa: F401

link_mlprogram = link_stage
unlink_mlprogram = unlink
