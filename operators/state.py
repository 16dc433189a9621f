"""Checked reading of saved state: plain JSON values and numpy arrays, nothing that can run code.

Each stateful piece of a stream (keyframe policy, tracks, prompt memories, ...) turns itself into a
*state*: a dict of JSON values (``None``, bool, int, float, str, lists, dicts with str keys) and numpy
arrays of plain dtypes, with ``to_state()``, and is rebuilt from one with ``from_state(...)``. A state
read back from disk is untrusted: :class:`StateReader` checks every value's type, and every array's
dtype and shape, and raises :class:`StateError` naming the field otherwise.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class StateError(ValueError):
    """A saved state that is not what its ``from_state`` expects (a field missing, of a wrong type or shape)."""


class StateReader:
    """Typed access to the fields of one state mapping; ``where`` names it in errors (``policy.low_streak``)."""

    def __init__(self, state: object, where: str) -> None:
        if not isinstance(state, dict):
            raise StateError(f"{where}: expected a mapping, got {type(state).__name__}")
        self.state, self.where = state, where

    def value(self, name: str) -> Any:
        """The raw value of field ``name``; :class:`StateError` if missing."""
        if name not in self.state:
            raise StateError(f"{self.where}.{name}: missing")
        return self.state[name]

    def _fail(self, name: str, expected: str, value: object) -> StateError:
        return StateError(f"{self.where}.{name}: expected {expected}, got {type(value).__name__}")

    def _typed(self, name: str, types: tuple[type, ...], expected: str, optional: bool) -> Any:
        """The field's value if it is one of ``types`` (a bool counts only where ``types`` names it), or None
        where ``optional``."""
        value = self.value(name)
        if value is None and optional:
            return None
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise self._fail(name, expected, value)
        return value

    def integer(self, name: str, minimum: int | None = None, optional: bool = False) -> int | None:
        value = self._typed(name, (int,), "an integer", optional)
        if value is not None and minimum is not None and value < minimum:
            raise StateError(f"{self.where}.{name}: {value} is below {minimum}")
        return value

    def number(self, name: str) -> float:
        return float(self._typed(name, (int, float), "a number", False))

    def flag(self, name: str) -> bool:
        return self._typed(name, (bool,), "true or false", False)

    def text(self, name: str, optional: bool = False) -> str | None:
        return self._typed(name, (str,), "a string", optional)

    def items(self, name: str, optional: bool = False) -> list | None:
        return self._typed(name, (list,), "a list", optional)

    def ints(self, name: str) -> list[int]:
        values = self.items(name)
        if not all(is_integer(v) for v in values):
            raise StateError(f"{self.where}.{name}: expected a list of integers")
        return values

    def counts(self, name: str) -> dict[str, int]:
        """A ``dict[str, int]`` (a JSON object of integers)."""
        value = self.value(name)
        if not isinstance(value, dict) or not all(is_integer(v) for v in value.values()):
            raise self._fail(name, "a mapping of integers", value)
        return value

    def readers(self, name: str) -> list["StateReader"]:
        """A list of nested states, each as its own reader (``name[i]``)."""
        return [StateReader(item, f"{self.where}.{name}[{i}]") for i, item in enumerate(self.items(name))]

    def number_map(self, name: str, values: type = int) -> dict[int, Any]:
        """A ``dict[int, int | float]`` saved as a list of ``[key, value]`` pairs (JSON keys are strings), in order."""
        result: dict[int, Any] = {}
        for pair in self.items(name):
            valid = is_integer if values is int else is_number
            if not (isinstance(pair, list) and len(pair) == 2 and is_integer(pair[0]) and valid(pair[1])):
                raise StateError(f"{self.where}.{name}: expected [integer, {values.__name__}] pairs, got {pair!r:.60}")
            result[pair[0]] = values(pair[1])
        return result

    def array(self, name: str, dtype: type | str, shape: Sequence[int | None], optional: bool = False
              ) -> np.ndarray | None:
        """An array of exactly ``dtype`` whose shape matches ``shape`` (None: any length on that axis)."""
        value = self.value(name)
        if value is None and optional:
            return None
        return check_array(value, dtype, shape, f"{self.where}.{name}")


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_array(value: object, dtype: type | str, shape: Sequence[int | None], where: str) -> np.ndarray:
    """``value`` itself if it is an array of ``dtype`` and ``shape`` (None: any length); :class:`StateError` else."""
    if not isinstance(value, np.ndarray):
        raise StateError(f"{where}: expected an array, got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise StateError(f"{where}: expected {np.dtype(dtype)} values, got {value.dtype}")
    if value.ndim != len(shape) or any(n is not None and n != got for n, got in zip(shape, value.shape)):
        wanted = "x".join("N" if n is None else str(n) for n in shape) or "a scalar"
        raise StateError(f"{where}: expected shape {wanted}, got {'x'.join(map(str, value.shape)) or 'a scalar'}")
    return value


def number_pairs(mapping: dict[int, Any]) -> list[list]:
    """The saved form of a ``dict[int, number]`` read back by :meth:`StateReader.number_map`."""
    return [[int(k), v] for k, v in mapping.items()]
