"""Name -> factory registries, one per kind of component named in params.yaml."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from dml.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories and builds them from config mappings.

    ``build`` checks the arguments against the factory's signature, so a misspelt knob in
    params.yaml is an error that names the key and lists the valid ones.
    """

    def __init__(self, kind: str, knob_prefix: str | None = None) -> None:
        self.kind = kind
        self.knob_prefix = knob_prefix
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers ``factory`` under ``name``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str, *, where: str = "") -> Callable[..., T]:
        """The factory for ``name``; unknown names list the valid ones (under the dotted key
        ``<where>.name`` when given)."""
        try:
            return self._factories[name]
        except KeyError:
            key = f"{where}.name: " if where else ""
            raise ConfigError(
                f"{key}unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None

    def parameters(self, name: str, *, where: str = "") -> dict[str, inspect.Parameter]:
        """Keyword parameters the factory for ``name`` accepts."""
        signature = inspect.signature(self.get(name, where=where))
        return {
            key: p
            for key, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def check_kwargs(self, name: str, kwargs: Mapping[str, Any], *, where: str = "") -> None:
        """Raise ConfigError naming any key that ``name``'s factory does not accept."""
        accepted = self.parameters(name, where=where)
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            prefix = f"{where}." if where else ""
            raise ConfigError(
                f"unknown key(s) {', '.join(prefix + k for k in unknown)} for {self.kind} "
                f"{name!r}; valid keys: {', '.join(sorted(accepted)) or '(none)'}"
            )

    def build(self, name: str, /, *args: Any, where: str = "", **kwargs: Any) -> T:
        """Build ``name`` with ``kwargs`` after checking every key is accepted.

        Factories name a bad knob value as ``<knob_prefix><knob>`` (``loss.margin``); the
        error is re-raised with the knob's place in params.yaml, ``<where>.<knob>``.
        """
        self.check_kwargs(name, kwargs, where=where)
        try:
            return self.get(name)(*args, **kwargs)
        except ConfigError as err:
            text = str(err)
            if where and self.knob_prefix and text.startswith(self.knob_prefix):
                raise ConfigError(f"{where}.{text[len(self.knob_prefix):]}") from None
            raise
