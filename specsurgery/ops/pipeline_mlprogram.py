"""Transitional alias of :mod:`specsurgery.ops.pipeline.mlprogram` (removed once no caller uses it)."""

from .pipeline.mlprogram import has_program, make_pipeline, pack_weights  # noqa: F401

pipeline_mlprogram = make_pipeline
