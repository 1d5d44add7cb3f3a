"""The one JSON decoder of every message relance receives: ERP events, command acknowledgements, the notifier's
commands and the lines ``relance publish`` sends.

Plain ``json.loads`` (and orjson) accept text that relance must refuse:

- **Duplicate keys.** ``{"tenant": "acme-fr", "tenant": "other"}`` keeps the last one; a gateway or an auditor that
  keeps the first sees another message than the one relance applies. RFC 8259 only says names SHOULD be unique, so
  such a message is JSON, but an ambiguous one: it is refused as ``schema``, naming the key and where it is.
- **Implementation limits** (RFC 8259 §9 lets a parser set them). Text nested 100,000 deep exhausts the
  interpreter's recursion, a 5,000-digit integer costs quadratic time to convert (and Python refuses it past 4,300
  digits), ``NaN`` and ``Infinity`` are not JSON at all. Nesting deeper than :data:`MAX_DEPTH` and numbers longer
  than :data:`MAX_NUMBER_CHARS` characters are refused as ``not_json`` before anything is built from them.

Speed: orjson cannot report duplicates, so this decoder is the standard library's C scanner with an
``object_pairs_hook`` that compares ``len(dict(pairs))`` with ``len(pairs)``, built once per hook (``json.loads``
with hooks builds a decoder per call); the depth is only computed exactly when a cheap count of ``[`` and ``{``
exceeds the limit. On 10,000 ERP messages it takes what the ``json.loads(..., parse_float=...)`` it replaced took
(about 56 ms on the project's machine, a fifth of what pydantic then spends validating them). The path of a
duplicate is worked out only once one was found, on a second, slower pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted; the deepest ERP message has 4 levels."""

MAX_NUMBER_CHARS = 40
"""Longest JSON number accepted, in characters (sign, digits, point, exponent)."""

JsonKind = Literal["not_json", "schema"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
_SAFE_LEFTOVER = 200  # unmatched brackets past which the C scanner itself could exhaust the recursion


class JsonRefused(ValueError):
    """Text relance will not decode: ``kind`` is ``not_json`` or ``schema`` (duplicate keys), ``reason`` says why."""

    def __init__(self, kind: JsonKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: JsonKind = kind
        self.reason = reason


class _Duplicate(Exception):
    pass


class _TooLong(Exception):
    def __init__(self, text: str) -> None:
        self.text = text


class _Pairs(list[tuple[str, Any]]):
    """An object as written, keys in order and duplicates kept: only built to find where a duplicate is."""


def loads(data: bytes | str, *, parse_float: Callable[[str], Any] = float) -> Any:
    """Decode one JSON text (UTF-8 when bytes), or raise :class:`JsonRefused` saying why not.

    ``parse_float`` receives the text of each number with a fraction or an exponent, as for :func:`json.loads`.
    """
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    try:
        text = raw.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise JsonRefused("not_json", f"body is not UTF-8: {exc}") from None
    _check_depth(raw)
    try:
        return _decode(text, parse_float, _unique)
    except _Duplicate:
        tree = _decode(text, parse_float, _Pairs)
        raise JsonRefused("schema", _duplicate_reason(tree) or "duplicate key") from None


def fields_once(data: bytes) -> dict[str, Any]:
    """The top-level members of a JSON object that appear once, or nothing: best effort, for naming a refused
    message's ids in a log line or a dead-letter header (never from a duplicated key, which would be a guess)."""
    try:
        value = loads(data)
    except JsonRefused as exc:
        if exc.kind != "schema":
            return {}
        try:
            value = _decode(data.decode("utf-8"), float, _Pairs)
        except (JsonRefused, UnicodeDecodeError):
            return {}
        if not isinstance(value, _Pairs):
            return {}
        counts: dict[str, int] = {}
        for key, _ in value:
            counts[key] = counts.get(key, 0) + 1
        return {key: member for key, member in value if counts[key] == 1}
    return value if isinstance(value, dict) else {}


def _decode(text: str, parse_float: Callable[[str], Any], pairs_hook: Callable[[list[tuple[str, Any]]], Any]) -> Any:
    try:
        return _decoder(parse_float, pairs_hook).decode(text)
    except json.JSONDecodeError as exc:
        raise JsonRefused("not_json", f"body is not JSON: {exc}") from None
    except _TooLong as exc:
        raise JsonRefused(
            "not_json",
            f"a JSON number of {len(exc.text)} characters ({exc.text[:12]}…); relance reads numbers of at most "
            f"{MAX_NUMBER_CHARS} (money is a decimal string)",
        ) from None
    except RecursionError:  # pragma: no cover - _check_depth already refused anything this deep
        raise JsonRefused("not_json", f"JSON nested deeper than {MAX_DEPTH} levels") from None


@cache
def _decoder(parse_float: Callable[[str], Any], pairs_hook: Callable[[list[tuple[str, Any]]], Any]) -> json.JSONDecoder:
    """One decoder per kind of float and hook, built once: ``json.loads`` with hooks builds one per call."""
    return json.JSONDecoder(
        object_pairs_hook=pairs_hook,
        parse_int=_bounded(int),
        parse_float=_bounded(parse_float),
        parse_constant=_constant,
    )


def _bounded(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def bounded(value: str) -> Any:
        if len(value) > MAX_NUMBER_CHARS:
            raise _TooLong(value)
        return convert(value)

    return bounded


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate()
    return obj


def _constant(name: str) -> Any:
    raise JsonRefused("not_json", f"body is not JSON: {name} is not a JSON value")


def _check_depth(raw: bytes) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` without recursing: strings are blanked out, everything but the
    brackets dropped, then innermost pairs removed one level per round, all in C."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return  # cannot be deeper than the number of openers: nearly every message stops here
    skeleton = _STRING.sub(b"", raw).translate(_OPEN_CLOSE, _NOT_BRACKETS)
    if b"(" * (MAX_DEPTH + 1) in skeleton:  # the usual shape of a hostile text: one long run of openers
        raise JsonRefused("not_json", f"JSON nested deeper than {MAX_DEPTH} levels")
    for _ in range(MAX_DEPTH):
        reduced = skeleton.replace(b"()", b"")
        if reduced == skeleton:
            break
        skeleton = reduced
    else:
        if skeleton:
            raise JsonRefused("not_json", f"JSON nested deeper than {MAX_DEPTH} levels")
    if len(skeleton) > _SAFE_LEFTOVER:  # brackets that never close: not JSON, and too deep to hand to the scanner
        raise JsonRefused("not_json", f"body is not JSON: {len(skeleton)} brackets are never closed or never opened")


def _duplicate_reason(value: Any, path: str = "") -> str | None:
    """``<path>: duplicate key "<key>"`` for the first duplicated key, depth first, in document order."""
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, _ in value:
            if key in seen:
                where = f"{path}.{key}" if path else key
                return f'{_short(where)}: duplicate key "{_short(key)}"; each key may appear once in an object'
            seen.add(key)
        members: list[tuple[str, Any]] = list(value)
    elif isinstance(value, list):
        members = [(str(index), item) for index, item in enumerate(value)]
    else:
        return None
    for key, member in members:
        found = _duplicate_reason(member, f"{path}.{key}" if path else key)
        if found:
            return found
    return None


def _short(text: str) -> str:
    shown = json.dumps(text, ensure_ascii=True)[1:-1]
    return shown if len(shown) <= 80 else shown[:80] + "…"
