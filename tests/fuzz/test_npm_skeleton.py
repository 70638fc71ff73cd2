"""The npm publish checker (gateway/npm_publish.py) as properties: however a JSON document is written and cut into
chunks, its skeleton is the document with exactly its long strings replaced; and a refused document never reaches
the registry whole (what was sent of it is not JSON)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import npm_publish
from gateway.errors import BadRequest
from tests.fuzz.seed import FUZZ, examples

# Quotes, backslashes, controls, non-ASCII and surrogate pairs' worth of characters, then anything.
CHARS = st.sampled_from('"\\/\n\t\x00\x1f aZ9\u00e9\u2028\U0001f600') | st.characters(exclude_categories=("Cs",))
pieces = st.text(CHARS, max_size=12)
# Some strings far longer than LONG, as a tarball's base64 or a readme: a piece repeated.
strings = pieces | st.builds(lambda p, n: (p or "x") * n, pieces, st.integers(300, 2000))
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | strings
documents = st.dictionaries(
    strings,
    st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4)),
    max_size=6,
)


def shortened(value: Any, ensure_ascii: bool) -> Any:
    """The oracle: a string whose JSON text (escaped, as written) is longer than LONG bytes becomes NUL."""
    if isinstance(value, str):
        written = len(json.dumps(value, ensure_ascii=ensure_ascii).encode()) - 2
        return "\x00" if written > npm_publish.LONG else value
    if isinstance(value, dict):
        return {shortened(k, ensure_ascii): shortened(v, ensure_ascii) for k, v in value.items()}
    if isinstance(value, list):
        return [shortened(v, ensure_ascii) for v in value]
    return value


def chunks_of(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


@given(
    doc=documents,
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=30),
)
@settings(FUZZ, max_examples=examples(300))
def test_the_skeleton_is_the_document_without_its_long_strings(
    doc: dict[str, Any], ensure_ascii: bool, indent: int | None, cuts: list[int]
) -> None:
    body = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent).encode()
    skeleton = npm_publish.Skeleton(1 << 24)
    for chunk in chunks_of(body, cuts):
        skeleton.feed(chunk)
    assert skeleton.document() == shortened(doc, ensure_ascii)


async def _through(parts: list[bytes]) -> tuple[bytes, bool]:
    async def source() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    sent = b""
    try:
        async for chunk in npm_publish.checked(source(), "demo", 1 << 24):
            sent += chunk
    except BadRequest:
        return sent, True
    return sent, False


@given(
    doc=documents,
    publish=st.booleans(),
    trailing=st.sampled_from([b"", b"\n", b" \r\n\t ", b"\n" * 5]),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=30),
)
@settings(FUZZ, max_examples=examples(300))
def test_a_refused_document_never_reaches_the_registry_whole(
    doc: dict[str, Any], publish: bool, trailing: bytes, cuts: list[int]
) -> None:
    if publish:  # some examples that pass, with the fuzzed keys around a real publish
        doc = {
            **doc,
            "name": "demo",
            "versions": {"1.0.0": {"version": "1.0.0"}},
            "_attachments": {"demo-1.0.0.tgz": {"data": "QUJD"}},
        }
        doc.pop("_id", None)
    body = json.dumps(doc).encode() + trailing
    sent, refused = asyncio.run(_through(chunks_of(body, cuts)))
    assert refused == (npm_publish.problem(doc, "demo") is not None)
    if refused:
        with pytest.raises(ValueError):
            json.loads(sent)  # a cut-off object: nothing a registry could act on
    else:
        assert sent == body
