"""What an HTTP trigger answers, and reading a request's JSON body safely."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from shared.errors import BadRequest

MAX_BODY_BYTES = 16 * 1024
# {"models": [...]} nests two levels; ignored fields may add a few.
MAX_BODY_DEPTH = 8


@dataclass(frozen=True)
class HttpAnswer:
    """What an HTTP trigger answers."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    mimetype: str = "application/json"


def check_size(body: bytes) -> None:
    """BadRequest if the body is larger than any request of ours needs."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(
            f"the request body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted"
        )


def json_document(body: bytes, example: str) -> dict[str, object]:
    """The body as a JSON object; BadRequest naming `example` if it is not one."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    if _nesting_depth(text) > MAX_BODY_DEPTH:
        # Checked before parsing: Python's JSON parser recurses, and a deep body exhausts its stack.
        raise BadRequest(
            f"the request body is nested more than {MAX_BODY_DEPTH} levels deep; "
            f"send an object such as {example}"
        )
    try:
        document = json.loads(text)
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise BadRequest(f"the request body must be a JSON object such as {example}")
    return document


def json_type(value: object) -> str:
    """What a JSON value is, in words for an error message (never the value itself)."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "true or false",
        type(None): "null",
    }
    return names.get(type(value), "a number")


def _nesting_depth(text: str) -> int:
    """How deeply JSON text nests arrays and objects, brackets inside strings aside."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", re.sub(r'"(?:[^"\\]|\\.)*"', "", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest
