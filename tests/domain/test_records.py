"""logpipe.domain.records: frozen records behave as frozen dataclasses do.

Each behaviour is checked against the standard library's own frozen
dataclass declared the same way, where the two should agree (construction,
defaults, equality, hashing, repr), and on its own where records say more
(their error messages, what they refuse to declare).
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import ClassVar

import pytest

from logpipe.domain import records
from logpipe.domain.records import FrozenRecordError, field, fields, frozen, replace


@frozen
class Point:
    """A record with a required field, defaults, a factory and a class variable."""

    kind: ClassVar[str] = "point"

    x: int
    y: int = 0
    tags: dict[str, int] = field(default_factory=dict)
    label: str = field(default="p", metadata={"unit": "none"})

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


@dataclasses.dataclass(frozen=True)
class DataPoint:
    """The same declaration, as a frozen dataclass."""

    kind: ClassVar[str] = "point"

    x: int
    y: int = 0
    tags: dict[str, int] = dataclasses.field(default_factory=dict)
    label: str = dataclasses.field(default="p", metadata={"unit": "none"})


CALLS = [
    ((1,), {}),
    ((1, 2), {}),
    ((), {"x": 3, "label": "q"}),
    ((4,), {"y": 5, "tags": {"a": 1}}),
    ((6, 7, {"b": 2}, "r"), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_construction_matches_a_frozen_dataclass(args: tuple, kwargs: dict) -> None:
    record, reference = Point(*args, **kwargs), DataPoint(*args, **kwargs)
    assert [getattr(record, f.name) for f in fields(record)] == [
        getattr(reference, f.name) for f in dataclasses.fields(reference)
    ]
    assert repr(record) == repr(reference).replace("DataPoint", "Point")


def test_fields_are_declared_in_order_with_defaults_and_metadata() -> None:
    declared = fields(Point)
    assert [f.name for f in declared] == ["x", "y", "tags", "label"]  # the ClassVar is no field
    assert declared[0].required and not declared[1].required
    assert declared[1].default == 0
    assert declared[2].default_factory is dict
    assert declared[3].metadata == {"unit": "none"}
    assert fields(Point(1)) is declared
    assert Point.kind == "point" and Point.y == 0  # class attributes stay: the defaults


def test_each_record_gets_its_own_factory_default() -> None:
    first, second = Point(1), Point(1)
    first.tags["a"] = 1
    assert second.tags == {}


def test_equality_and_hash_follow_the_fields() -> None:
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1) != DataPoint(1)  # another class, equal fields: not equal, as with dataclasses
    assert (Point(1) == (1, 0, {}, "p")) is False
    assert hash(Checked(1, 2)) == hash(Checked(1, 2.0)) == hash(DataChecked(1, 2.0))
    assert len({Checked(1, 2), Checked(1, 2), Checked(3)}) == 2
    with pytest.raises(TypeError, match="unhashable"):
        hash(Point(1))  # as with a dataclass: its dict field cannot be hashed
    with pytest.raises(TypeError, match="unhashable"):
        hash(DataPoint(1))


def test_properties_and_methods_of_the_class_still_work() -> None:
    assert Point(-3, 4).norm1 == 7


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, r"Point\(\) missing required argument: 'x'"),
        ((1,), {"x": 2}, r"Point\(\) got multiple values for argument 'x'"),
        ((1,), {"z": 2}, r"Point\(\) got an unexpected keyword argument 'z'"),
        ((1, 2, {}, "p", 5), {}, r"Point\(\) takes 4 positional arguments but 5 were given"),
    ],
)
def test_a_bad_call_is_a_type_error_naming_the_argument(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_fields_cannot_be_assigned_or_deleted() -> None:
    point = Point(1)
    with pytest.raises(FrozenRecordError, match="cannot assign to field 'x' of a frozen Point"):
        point.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):  # FrozenRecordError is one, as FrozenInstanceError is
        point.other = 2  # type: ignore[attr-defined]
    with pytest.raises(FrozenRecordError, match="cannot delete field 'y'"):
        del point.y  # type: ignore[misc]
    assert (point.x, point.y) == (1, 0)


@frozen
class Checked:
    """A record whose __post_init__ normalises and validates, as PipelineConfig's does."""

    size: int
    ratio: float = 1

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size {self.size} is out of range")
        object.__setattr__(self, "ratio", float(self.ratio))


@dataclasses.dataclass(frozen=True)
class DataChecked:
    size: int
    ratio: float = 1


def test_post_init_runs_after_the_fields_are_set() -> None:
    checked = Checked(3)
    assert type(checked.ratio) is float and checked.ratio == 1.0
    with pytest.raises(ValueError, match="size 0 is out of range"):
        Checked(0)


def test_replace_builds_a_validated_copy() -> None:
    checked = Checked(3, 2)
    changed = replace(checked, size=5)
    assert (changed.size, changed.ratio) == (5, 2.0)
    assert (checked.size, checked.ratio) == (3, 2.0)  # the original is untouched
    with pytest.raises(ValueError, match="size 0 is out of range"):
        replace(checked, size=0)
    with pytest.raises(TypeError, match="Checked has no field 'colour'"):
        replace(checked, colour="red")


def test_fields_of_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="is not a frozen record"):
        fields(DataPoint)


def test_a_record_pickles_and_copies() -> None:
    import copy

    point = Point(1, 2, {"a": 1}, "q")
    assert pickle.loads(pickle.dumps(point)) == point
    assert copy.deepcopy(point) == point


def test_methods_the_class_defines_are_kept() -> None:
    @frozen
    class Shown:
        value: int

        def __repr__(self) -> str:
            return f"<{self.value}>"

    assert repr(Shown(3)) == "<3>"


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({"__annotations__": {"a": "int", "b": "int"}, "a": 1}, TypeError,
         "C.b: a field without a default follows one with a default"),
        ({"__annotations__": {"a": "list[int]"}, "a": []}, ValueError,
         "C.a: a mutable default"),
        ({"__annotations__": {"a": "int"}, "__init__": lambda self: None}, TypeError,
         "C: a frozen record gets its __init__ from its fields"),
    ],
)  # fmt: skip
def test_declarations_records_refuse(body: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        frozen(type("C", (), dict(body)))


def test_a_field_takes_a_default_or_a_factory_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        records.field(default=1, default_factory=int)


def test_class_vars_are_left_out_however_they_are_written() -> None:
    import typing

    cls = type("C", (), {"__annotations__": {"a": "typing.ClassVar[int]", "b": ClassVar[int], "c": "int"},
                         "a": 1, "b": 2})  # fmt: skip
    frozen(cls)
    assert [f.name for f in fields(cls)] == ["c"]
    assert typing.ClassVar is ClassVar
