"""What training needs from a tracker, with no MLflow import: training and data stay importable
(and testable) without the tracking stage. MlflowTracker (retino/tracking/runs.py) implements
this protocol; NullTracker records nothing. Generic on purpose: it logs values and files, and
knows nothing of what they are (the job packages the MLflow model and logs it as files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    """What training needs from a tracker (fit() runs with NullTracker in tests)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def logged_steps(self, key: str) -> set[int]: ...

    def log_artifact(self, path: Path) -> None: ...

    def log_artifacts(self, folder: Path, artifact_path: str) -> None: ...

    def log_model(self, folder: Path, name: str, metrics: Mapping[str, float], step: int,
                  tags: Mapping[str, str] | None = None) -> str: ...


class NullTracker:
    """Records nothing: for fit() called from code or tests without MLflow."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def logged_steps(self, key: str) -> set[int]:
        return set()

    def log_artifact(self, path: Path) -> None:
        pass

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        pass

    def log_model(self, folder: Path, name: str, metrics: Mapping[str, float], step: int,
                  tags: Mapping[str, str] | None = None) -> str:
        return ""
