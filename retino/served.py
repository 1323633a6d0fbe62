"""Compatibility: MLflow models logged by retino up to commit e8b99f2 (the flat layout, before
the stage subpackages) pickled their class as `retino.served.FundusGrader`. In a process that has
already imported today's retino, loading one looks that path up here; it is today's grader, which
reads the same artifacts (grader, config, weights). Nothing new imports this module."""

from retino.serving.pyfunc import FundusGrader

__all__ = ["FundusGrader"]
