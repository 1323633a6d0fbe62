"""One mechanism for every named choice: a `Registry` maps the names one setting may take
(`model.name`, `head.name`, `optimizer.name`, `schedule.name`, `imbalance`, `pretrain.source`,
prepare's `--format`, export's `--format`) to what each name builds or reads.

A builder is added where it is defined, with the `register` decorator (as timm's
`register_model`), so a new choice is its own code and its config file, and nothing else lists
it: validation and the error for an unknown name read the registry, `--help` lists the config
files, and a test fails when the two disagree.

    NETWORKS = Registry("model.name")

    @NETWORKS.register("resnet18")
    def resnet18(...): ...

    NETWORKS["resnet18"]       # the builder; an unknown name is a ConfigError listing the valid
    list(NETWORKS)             # the names, in the order they were registered
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from retino.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """The names the setting `key` may take, each with what it builds (a function, a class, a
    small record)."""

    def __init__(self, key: str) -> None:
        self.key = key  # as a user writes it: model.name, --format
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator adding what it decorates under `name`, and returning it unchanged."""
        def add(entry: T) -> T:
            self.add(name, entry)
            return entry
        return add

    def add(self, name: str, entry: T) -> None:
        """`name` -> `entry`; a name registered twice is a programming error, found at import."""
        if name in self._entries:
            raise ValueError(f"{self.key}={name!r} is registered twice.")
        self._entries[name] = entry

    def __getitem__(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"{self.key}={name!r} is not valid; choose one of: "
                              f"{', '.join(self._entries)}.")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.key!r}: {', '.join(self._entries)})"
