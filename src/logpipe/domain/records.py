"""Frozen value classes, declared like frozen dataclasses, without the dataclasses module.

Every ``logpipe run`` builds its configuration, its source and sink
configs and its report from small frozen value classes. As frozen
dataclasses they cost the start-up of every run ~15-20 ms on these
machines, close to half of what logpipe adds to the interpreter's own
start-up (``bench/bench_startup.py``): importing ``dataclasses`` imports
``inspect`` (and with it ``ast``, ``dis``, ``tokenize``...: ~10 ms), and
each decorated class compiles five to six generated methods (~0.4 ms a
class, more for PipelineConfig's 35 fields). Nothing else in a run needs
``inspect``.

:func:`frozen` reads the same declarations (annotated class attributes,
defaults, :func:`field` with metadata, ``ClassVar`` left out) and gives the
class the same behaviour as ``@dataclass(frozen=True)``:

- ``__init__`` taking the fields by position or keyword, defaults filled
  in, then ``__post_init__`` if the class has one (which may set fields
  with ``object.__setattr__``, as with dataclasses);
- ``__repr__`` (``Name(a=1, b='x')``), ``__eq__`` (same class, equal
  fields) and ``__hash__`` (of the fields);
- assigning or deleting a field raises :class:`FrozenRecordError` (an
  ``AttributeError``).

The methods are shared, written once here, instead of generated per
class: a record is built a little slower (its arguments are matched in a
loop), which costs nothing that matters here (configs are built once a
run, reports and ledgers a few times a second at most). :func:`fields` and
:func:`replace` stand for their dataclasses namesakes; ``replace`` builds a
new record, so ``__post_init__`` validates the changed copy.

Not supported, because nothing here needs them: inheritance between
records, keyword-only fields, ordering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, dataclass_transform, get_origin

__all__ = ["Field", "FrozenRecordError", "field", "fields", "frozen", "replace"]

R = TypeVar("R")


class FrozenRecordError(AttributeError):
    """A field of a frozen record was assigned or deleted."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class Field:
    """One declared field: its name, its default (MISSING if required) or a
    function making a fresh one for each record, and its metadata."""

    __slots__ = ("name", "default", "default_factory", "metadata")

    def __init__(
        self,
        name: str,
        default: Any = MISSING,
        default_factory: Callable[[], Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if default is not MISSING and default_factory is not None:
            raise ValueError(f"field {name!r}: give a default or a default_factory, not both")
        self.name = name
        self.default = default
        self.default_factory = default_factory
        self.metadata: dict[str, Any] = metadata or {}

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is None

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """A field declared with more than a default: ``x: int = field(default=1, metadata={...})``,
    ``y: dict = field(default_factory=dict)`` (a new dict for each record)."""
    return Field("", default, default_factory, metadata)


def _is_class_var(annotation: object) -> bool:
    if isinstance(annotation, str):  # postponed annotations (from __future__ import annotations)
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _declared_fields(cls: type) -> tuple[Field, ...]:
    found: list[Field] = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_class_var(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        declared = value if isinstance(value, Field) else Field(name, value)
        declared.name = name
        if isinstance(declared.default, (list, dict, set)):
            raise ValueError(f"{cls.__name__}.{name}: a mutable default ({type(declared.default).__name__}) "
                             "would be shared by every record")
        if declared.required and found and not found[-1].required:
            raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one with a default")
        found.append(declared)
    return tuple(found)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[R]) -> type[R]:
    """Make ``cls`` a frozen record of its annotated attributes (see the module docstring)."""
    if "__init__" in cls.__dict__:
        raise TypeError(f"{cls.__name__}: a frozen record gets its __init__ from its fields")
    declared = _declared_fields(cls)
    for item in declared:
        # The class attribute is the default only: instances hold the value.
        if item.default is MISSING:
            if item.name in cls.__dict__:
                delattr(cls, item.name)
        else:
            setattr(cls, item.name, item.default)
    cls.__record_fields__ = declared  # type: ignore[attr-defined]
    cls.__record_names__ = tuple(item.name for item in declared)  # type: ignore[attr-defined]
    for name, method in _METHODS.items():
        if name not in cls.__dict__:
            setattr(cls, name, method)
    return cls


def fields(record: object) -> tuple[Field, ...]:
    """The fields of a record or record class, in declaration order."""
    try:
        return record.__record_fields__  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        raise TypeError(f"{record!r} is not a frozen record") from None


def replace(record: R, **changes: Any) -> R:
    """A new record of the same class with ``changes`` applied (validated again by its __post_init__)."""
    values = {name: getattr(record, name) for name in type(record).__record_names__}  # type: ignore[attr-defined]
    unknown = changes.keys() - values.keys()
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(record)(**values)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    declared: tuple[Field, ...] = cls.__record_fields__
    if len(args) > len(declared):
        raise TypeError(f"{cls.__name__}() takes {len(declared)} positional arguments but {len(args)} were given")
    set_field = object.__setattr__
    for item, value in zip(declared, args):
        if item.name in kwargs:
            raise TypeError(f"{cls.__name__}() got multiple values for argument {item.name!r}")
        set_field(self, item.name, value)
    for item in declared[len(args):]:
        value = kwargs.pop(item.name, item.default)
        if value is MISSING:
            if item.default_factory is None:
                raise TypeError(f"{cls.__name__}() missing required argument: {item.name!r}")
            value = item.default_factory()
        set_field(self, item.name, value)
    if kwargs:  # what the fields did not take
        raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in type(self).__record_names__)


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__record_names__)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


_METHODS = {
    "__init__": _init,
    "__repr__": _repr,
    "__eq__": _eq,
    "__hash__": _hash,
    "__setattr__": _setattr,
    "__delattr__": _delattr,
}
