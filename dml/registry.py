"""Name -> factory registries, one per kind of component named in params.yaml.

A factory's signature is its declaration: its keyword parameters are the knobs params.yaml may
set (with their defaults), and a knob with a range declares it, ``margin: Annotated[float,
Knob(ge=0)] = 0.2``. The registry checks knobs against that declaration wherever a component
is built or checked: ``dml check``, a run's build, each bound of a Tune search dimension, and a
direct call of the factory (the range is enforced on the factory itself at registration).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dml.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Knob:
    """A knob's declared values, in a factory's signature: a numeric range,
    ``Annotated[float, Knob(ge=0)]`` (``integer``: whole numbers only), or a set of choices,
    ``Annotated[str, Knob(choices=("all", "semihard"))]`` (a callable where the choices are
    themselves registered, such as the geometries)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] | Callable[[], Sequence[Any]] | None = None

    def problem(self, value: Any) -> str | None:
        """What follows the knob's key when ``value`` is not allowed (``" must be >= 0, got
        -1"``, ``": 'x' is not one of: a, b"``), or None."""
        if self.choices is not None:
            allowed = list(self.choices() if callable(self.choices) else self.choices)
            return None if value in allowed else f": {value!r} is not one of: {', '.join(map(str, allowed))}"
        bounds = [f"{op} {bound:g}" for op, bound in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                  if bound is not None]
        wanted = " and ".join(bounds)
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or (not self.integer and math.isnan(value)):
            what = "an integer" if self.integer else "a number"
            return f" must be {what}{' ' + wanted if wanted else ''}, got {value!r}"
        ok = ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
              and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))
        return None if ok else f" must be {wanted}, got {value!r}"


def declared_knobs(factory: Callable[..., Any]) -> dict[str, Knob]:
    """The ranges ``factory`` declares for its knobs (``Annotated[..., Knob(...)]``)."""
    target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
    target = inspect.unwrap(target)
    annotations = inspect.get_annotations(target)
    scope = getattr(target, "__globals__", {})
    declared = {}
    for key, hint in annotations.items():
        if isinstance(hint, str):
            if "Knob(" not in hint:
                continue
            hint = eval(hint, scope)  # noqa: S307 - the factory's own annotation, in its module
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, Knob):
                declared[key] = meta
    return declared


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
        """Decorator that registers ``factory`` under ``name`` and enforces the ranges it
        declares on every call (a class's ``__init__``)."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            factory = self._enforcing(factory)
            self._factories[name] = factory
            return factory

        return decorator

    def _enforcing(self, factory: Callable[..., T]) -> Callable[..., T]:
        """``factory`` checking its declared knobs' values before it runs (errors under
        ``knob_prefix``, re-keyed by :meth:`build`)."""
        declared = declared_knobs(factory)
        if not declared:
            return factory
        target = factory.__init__ if inspect.isclass(factory) else factory  # type: ignore[misc]
        signature = inspect.signature(target)
        prefix = self.knob_prefix or f"{self.kind}."

        @functools.wraps(target)
        def checked(*args: Any, **kwargs: Any) -> Any:
            given = signature.bind_partial(*args, **kwargs).arguments
            _check_values(declared, given, prefix)
            return target(*args, **kwargs)

        if inspect.isclass(factory):
            factory.__init__ = checked  # type: ignore[misc]
            return factory
        return checked  # type: ignore[return-value]

    def knob_ranges(self, name: str, *, where: str = "") -> dict[str, Knob]:
        """The ranges the factory for ``name`` declares, by knob."""
        return declared_knobs(self.get(name, where=where))

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
        """Raise ConfigError naming any key that ``name``'s factory does not accept, or a
        value outside the range it declares."""
        accepted = self.parameters(name, where=where)
        unknown = sorted(set(kwargs) - set(accepted))
        prefix = f"{where}." if where else (self.knob_prefix or "")
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(prefix + k for k in unknown)} for {self.kind} "
                f"{name!r}; valid keys: {', '.join(sorted(accepted)) or '(none)'}"
            )
        _check_values(self.knob_ranges(name), kwargs, prefix)

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
                raise type(err)(f"{where}.{text[len(self.knob_prefix):]}") from None
            raise


class KnobValueError(ConfigError):
    """A knob's value is outside the range its factory declares (the knob itself exists)."""


def _check_values(declared: Mapping[str, Knob], values: Mapping[str, Any], prefix: str) -> None:
    """KnobValueError ``<prefix><knob> must be ...`` for the first value outside its range."""
    for key, knob in declared.items():
        if key in values:
            problem = knob.problem(values[key])
            if problem:
                raise KnobValueError(f"{prefix}{key}{problem}")
