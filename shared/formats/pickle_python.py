"""Which Python built a pickle, read from its opcodes without unpickling it.

A function that cloudpickle stores by value (one defined in a notebook or a
script's `__main__`, as Numerai's uploads are) carries its code objects, and a
code object only runs on the Python that compiled it: elsewhere it crashes the
interpreter or fails when called ("SystemError: no locals when deleting 'pd'").
So the version is told before loading, from two things cloudpickle writes for
each code object, `types.CodeType(*args)`:

1. the number of arguments: 16 up to Python 3.10, 18 from 3.11 on (3.11 added
   `co_qualname` and `co_exceptiontable`);
2. from 3.11 on, the bytecode `co_code` (args[6]), read with each version's
   opcode table (`OPCODES`): every instruction is two bytes followed by its
   inline cache entries, which `co_code` holds zeroed. The bytecode of another
   version does not read that way: an opcode that version does not have, a
   cache entry where an instruction should be, or a non-zero byte where a cache
   entry should be. 3.13 renumbered the opcodes (RESUME is 149, not 151), and
   3.12 changed cache sizes (LOAD_ATTR 9 entries, 3.11 4) and dropped PRECALL.

Every code object in the file must agree; the version is known when exactly one
remains. A function too small to tell (`lambda live: live` compiles to the
same bytes on 3.11 and 3.12), a pickle without code objects (an estimator, a
function stored by reference) or a file that is not a plain pickle stream gives
None. A Python this table does not know (3.14) is never told another's pickle:
its bytecode could read as an older version's. Nothing here imports or calls
anything the pickle names.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import pickletools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# Per minor version of 3.x: the opcodes that can start an instruction in `co_code`
# (inclusive ranges; CACHE, 0, cannot), and the inline cache entries of those that
# have some. From each Python's `opcode.opmap` and `opcode._inline_cache_entries`;
# tests/test_pickle_python.py compares them with every Python installed.
OPCODES: dict[int, tuple[tuple[tuple[int, int], ...], dict[int, int]]] = {
    11: (
        (
            (1, 2), (9, 12), (15, 15), (25, 25), (30, 33), (35, 37), (49, 54), (60, 61),
            (68, 71), (74, 75), (82, 112), (114, 120), (122, 126), (128, 140), (142, 142), (144, 149), (151, 152),
            (155, 157), (160, 160), (162, 166), (171, 176),
        ),
        {25: 4, 60: 1, 92: 1, 95: 4, 106: 4, 107: 2, 116: 5, 122: 1, 160: 10, 166: 1, 171: 4},
    ),
    12: (
        (
            (1, 5), (9, 9), (11, 12), (15, 15), (17, 17), (25, 27), (30, 33), (35, 37),
            (49, 55), (60, 61), (68, 69), (71, 71), (74, 75), (83, 83), (85, 85), (87, 87),
            (89, 110), (114, 147), (149, 152), (155, 157), (162, 165), (171, 176),
        ),
        {25: 1, 60: 1, 92: 1, 93: 1, 95: 4, 106: 9, 107: 1, 116: 4, 122: 1, 123: 1, 141: 1, 171: 3},
    ),
    13: (
        ((1, 2), (4, 118), (149, 149)),
        {5: 1, 39: 1, 40: 3, 45: 1, 53: 3, 58: 1, 59: 1, 72: 1, 77: 1, 82: 9, 91: 4, 93: 1,
         97: 1, 98: 1, 99: 1, 100: 1, 104: 1, 108: 4, 117: 1},
    ),
}  # fmt: skip

# The Pythons whose pickles the reading tells apart: on any other, a verdict could be wrong.
TOLD_APART = frozenset({10, *OPCODES})

# The Pythons a deployment can run (infra/main.bicep's pythonVersion).
DEPLOYABLE = (11, 12, 13)

# cloudpickle's CodeType argument counts: up to 3.10, and from 3.11 on.
_ARGS_BEFORE_3_11 = 16
_ARGS_FROM_3_11 = 18
_CODE_ARGUMENT = 6
# Bytes values longer than this are array data, never bytecode: not kept.
_LONGEST_KEPT = 1 << 20


def built_on(path: Path) -> int | None:
    """The minor version of the Python 3 that built the pickle at `path`, or None if unknown.

    Reads gzip, bz2 and xz files as `pandas.read_pickle` does; anything else that
    is not a pickle stream (joblib's compressed files) gives None.
    """
    with _open(path) as stream:
        versions: set[int] | None = None
        for arguments in code_arguments(stream):
            possible = _versions_of(arguments)
            if possible is not None:
                versions = possible if versions is None else versions & possible
    return next(iter(versions)) if versions is not None and len(versions) == 1 else None


def mismatch_advice(built: int, running: int) -> str:
    """What to do about a pickle built on Python 3.`built` where 3.`running` runs."""
    if built in DEPLOYABLE:
        return (
            f"set PYTHON_VERSION=3.{built} (azd env set PYTHON_VERSION 3.{built}) "
            f"or save the model on 3.{running}"
        )
    offered = ", ".join(f"3.{minor}" for minor in DEPLOYABLE)
    return f"save the model on 3.{running} (a deployment can run {offered})"


def unknown_python_hint(running: int) -> str:
    """The hint for a failure that a pickle from an unknown other Python causes."""
    offered = ", ".join(f"3.{minor}" for minor in DEPLOYABLE if minor != running)
    return (
        f"a pickle built on another Python version does this — this app runs Python 3.{running}: "
        f"save the model on 3.{running}, or set PYTHON_VERSION to the Python that saved it "
        f"({offered}; azd env set PYTHON_VERSION …)"
    )


def _open(path: Path) -> IO[bytes]:
    """The file, decompressed when its first bytes say gzip, bz2 or xz."""
    with path.open("rb") as raw:
        head = raw.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if head.startswith(b"\xfd7zXZ"):
        return lzma.open(path, "rb")
    return path.open("rb")


def _versions_of(arguments: tuple[Any, ...]) -> set[int] | None:
    """The minor versions a code object's CodeType arguments fit; None when they say nothing."""
    if len(arguments) == _ARGS_BEFORE_3_11:
        return {10}  # Numerai's oldest image; older Pythons store the same count
    if len(arguments) != _ARGS_FROM_3_11 or not isinstance(arguments[_CODE_ARGUMENT], bytes):
        return None
    return {minor for minor in OPCODES if reads_as(arguments[_CODE_ARGUMENT], minor)}


def reads_as(code: bytes, minor: int) -> bool:
    """Whether `code` is well-formed bytecode of Python 3.`minor` (3.11 or later)."""
    ranges, caches = OPCODES[minor]
    position = 0
    while position < len(code):
        opcode = code[position]
        if not any(low <= opcode <= high for low, high in ranges):
            return False
        end = position + 2 + 2 * caches.get(opcode, 0)
        if end > len(code) or any(code[position + 2 : end]):
            return False
        position = end
    return True


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Call:
    function: Any
    arguments: Any


class _Opaque:
    """Any value the reading does not need to know."""


_MARK = object()
_CONSTANTS = frozenset(
    {
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
        "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    }
)  # fmt: skip
_FIXED = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_TUPLE": ()}
_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def code_arguments(stream: IO[bytes]) -> Iterator[tuple[Any, ...]]:
    """The argument tuples of every `types.CodeType(...)` call in a pickle stream, in order.

    A small symbolic pickle machine: constants, tuples, globals, calls and the
    memo are followed; every other value is opaque. A stream that stops being a
    pickle (joblib appends raw array data) ends the reading, not the caller.
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, argument, _ in pickletools.genops(stream):
            name = opcode.name
            if name == "STOP":
                return
            if name == "REDUCE":
                arguments, function = stack.pop(), stack.pop()
                if _is_code_type(function) and isinstance(arguments, tuple):
                    yield arguments
                stack.append(_Call(function, arguments))
            else:
                _step(name, opcode, argument, stack, memo)
    except (ValueError, IndexError, KeyError, EOFError, OSError, lzma.LZMAError):
        return  # not, or no longer, a pickle stream


def _step(name: str, opcode: Any, argument: Any, stack: list[Any], memo: dict[int, Any]) -> None:
    """Apply one pickle opcode other than REDUCE and STOP to the symbolic stack and memo."""
    if name in _CONSTANTS:
        long_bytes = isinstance(argument, bytes) and len(argument) > _LONGEST_KEPT
        stack.append(_Opaque() if long_bytes else argument)
    elif name in _FIXED:
        stack.append(_FIXED[name])
    elif name in _TUPLES:
        count = _TUPLES[name]
        stack[-count:] = [tuple(stack[-count:])]
    elif name == "TUPLE":
        stack.append(tuple(_pop_to_mark(stack)))
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "GLOBAL":
        module, _, attribute = argument.partition(" ")
        stack.append(_Global(module, attribute))
    elif name == "STACK_GLOBAL":
        attribute, module = stack.pop(), stack.pop()
        stack.append(_Global(str(module), str(attribute)))
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[int(argument)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo[int(argument)])
    elif name == "DUP":
        stack.append(stack[-1])
    else:
        _generic(opcode, stack)


def _generic(opcode: Any, stack: list[Any]) -> None:
    """Pop what `opcode` consumes and push one opaque value per thing it produces."""
    before = list(opcode.stack_before)
    if pickletools.markobject in before:
        _pop_to_mark(stack)
        before = before[: before.index(pickletools.markobject)]
    for _ in before:
        stack.pop()
    stack.extend(_Opaque() for _ in opcode.stack_after)


def _pop_to_mark(stack: list[Any]) -> list[Any]:
    """Remove and return the items above the topmost mark, and the mark."""
    for index in range(len(stack) - 1, -1, -1):
        if stack[index] is _MARK:
            items = stack[index + 1 :]
            del stack[index:]
            return items
    raise IndexError("no mark on the stack")


def _is_code_type(function: Any) -> bool:
    """`types.CodeType`, by name or as cloudpickle's `_builtin_type("CodeType")`."""
    if isinstance(function, _Global):
        return function.name == "CodeType"
    return (
        isinstance(function, _Call)
        and isinstance(function.function, _Global)
        and function.function.name == "_builtin_type"
        and function.arguments == ("CodeType",)
    )
