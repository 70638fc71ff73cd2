"""npm publish bodies (gateway/npm_publish.py): the streamed skeleton and what counts as a publish of one version."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway import npm_publish
from gateway.errors import BadRequest

TARBALL = base64.b64encode(random.Random(1).randbytes(30_000)).decode()


def publish(name: str = "demo", version: str = "1.0.0", **changes: Any) -> dict[str, Any]:
    """The body npm's libnpmpublish sends."""
    doc: dict[str, Any] = {
        "_id": name,
        "name": name,
        "description": 'quotes " and \\ backslashes \u00e9',
        "dist-tags": {"latest": version},
        "versions": {version: {"name": name, "version": version, "readme": "r" * 10_000, "dist": {"shasum": "x"}}},
        "access": None,
        "_attachments": {f"{name}-{version}.tgz": {"content_type": "application/octet-stream", "data": TARBALL}},
    }
    doc.update(changes)
    return doc


def shortened(value: Any) -> Any:
    """What the skeleton keeps of a document: strings longer than LONG become NUL."""
    if isinstance(value, str):
        return "\x00" if len(value.encode()) > npm_publish.LONG else value
    if isinstance(value, dict):
        return {shortened(k): shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shortened(v) for v in value]
    return value


@pytest.mark.parametrize("seed", range(30))
def test_the_skeleton_is_the_document_without_its_long_strings_however_it_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    # Quotes and backslashes, far from LONG either way (the skeleton measures a string as written, escaped).
    doc = publish(name=rng.choice(["demo", "@scope/demo"]), tricky='a"b\\' * rng.choice([0, 10, 2000]))
    body = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2])).encode()
    skeleton = npm_publish.Skeleton(1 << 20)
    cuts = sorted(rng.sample(range(1, len(body)), 40))
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        skeleton.feed(body[start:end])
    assert skeleton.document() == shortened(doc)
    assert len(skeleton.out) < 3000


BAD = {
    "another name": (publish(name="other"), "must name the package"),
    "another _id": (publish(_id="other"), "must name the package"),
    "a deprecation": (
        publish(versions={"1.0.0": {"name": "demo", "version": "1.0.0", "deprecated": ""}}),
        "one new version",
    ),
    "two versions": (publish(versions={"1.0.0": {}, "2.0.0": {}}), "one new version"),
    "no versions (unpublish all)": (publish(versions={}, **{"dist-tags": {}}), "one new version"),
    "no attachments (a document change)": (publish(_attachments=None), "one new version"),
    "a version key unlike its manifest": (publish(versions={"1.0.0": {"version": "2.0.0"}}), "one new version"),
    "two tarballs": (
        publish(_attachments={"demo-1.0.0.tgz": {}, "demo-2.0.0.tgz": {}}),
        "exactly one tarball, demo-1.0.0.tgz",
    ),
    "a tarball of another version": (publish(_attachments={"demo-2.0.0.tgz": {}}), "exactly one tarball"),
    "a bundle without its tarball": (publish(_attachments={"demo-1.0.0.sigstore": {}}), "exactly one tarball"),
    "a bundle of another version": (
        publish(_attachments={"demo-1.0.0.tgz": {}, "demo-2.0.0.sigstore": {}}),
        "exactly one tarball",
    ),
    "an attachment not an object": (publish(_attachments={"demo-1.0.0.tgz": "AAAA"}), "exactly one tarball"),
    "a long version key": (
        publish(version="1." + "0" * 5000, _attachments={"demo-1." + "0" * 5000 + ".tgz": {}}),
        "exactly one tarball",
    ),
    "not an object": ([1], "must name the package"),
    "another version tagged": (publish(**{"dist-tags": {"latest": "1.0.0", "next": "0.9.0"}}), "tag only the version"),
    "a tag deleted": (publish(**{"dist-tags": {"latest": "1.0.0", "old": None}}), "tag only the version"),
    "tags not an object": (publish(**{"dist-tags": ["latest"]}), "tag only the version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_what_is_not_a_publish_of_one_version(case: str) -> None:
    doc, reason = BAD[case]
    found = npm_publish.problem(shortened(doc), "demo")
    assert found is not None and reason in found


@pytest.mark.parametrize("name", ["demo", "@scope/demo"])
@pytest.mark.parametrize("tags", [{"latest": "1.0.0"}, {"beta": "1.0.0"}, {}, None])
@pytest.mark.parametrize("provenance", [False, True])
def test_a_publish_of_one_version(name: str, tags: dict[str, str] | None, provenance: bool) -> None:
    doc = publish(name=name, **{"dist-tags": tags})
    if tags is None:
        del doc["dist-tags"]
    if provenance:  # npm publish --provenance: the sigstore bundle beside the tarball
        doc["_attachments"][f"{name}-1.0.0.sigstore"] = {"content_type": "application/vnd.dev.sigstore.bundle+json"}
    assert npm_publish.problem(shortened(doc), name) is None


@pytest.mark.parametrize(
    ("encoding", "accepted"), [("utf-8", True), ("utf-8-sig", True), ("utf-16", False), ("utf-32", False)]
)
def test_only_utf8_documents_are_read(encoding: str, accepted: bool) -> None:
    skeleton = npm_publish.Skeleton(1 << 20)
    skeleton.feed(json.dumps(publish()).encode(encoding))
    if accepted:
        assert npm_publish.problem(skeleton.document(), "demo") is None
    else:
        with pytest.raises(BadRequest, match=r"not JSON|ends inside a string"):
            skeleton.document()


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _sent(parts: list[bytes], name: str = "demo", maximum: int = 1 << 20) -> tuple[list[bytes], str | None]:
    sent: list[bytes] = []
    try:
        async for chunk in npm_publish.checked(_chunks(parts), name, maximum):
            sent.append(chunk)
    except BadRequest as exc:
        return sent, exc.message
    return sent, None


async def test_a_refused_document_never_reaches_its_closing_brace() -> None:
    body = json.dumps(publish(name="other")).encode()
    parts = [body[i : i + 1000] for i in range(0, len(body), 1000)] + [b"\n", b"  \r\n"]
    sent, refused = await _sent(parts)
    assert refused is not None and "must name the package" in refused
    assert b"".join(sent) == body[: len(body) - len(parts[-3])]  # the last chunk with the brace was held back


async def test_an_accepted_document_is_sent_whole() -> None:
    body = json.dumps(publish()).encode() + b"\n"
    parts = [body[i : i + 777] for i in range(0, len(body), 777)]
    sent, refused = await _sent(parts)
    assert refused is None and b"".join(sent) == body


@pytest.mark.parametrize(
    ("body", "maximum", "reason"),
    [
        (b'{"name": "demo", "x": "unterminated', 2048, "ends inside a string"),
        (b'{"name": "demo",}', 2048, "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, 1 << 20, "not JSON"),  # deeper than the parser's recursion limit
        (b'{"name": "demo"}' + b" " * 3000, 2048, "larger than 2048 bytes"),
    ],
)
async def test_malformed_documents_are_refused(body: bytes, maximum: int, reason: str) -> None:
    _, refused = await _sent([body[i : i + 500] for i in range(0, len(body), 500)], maximum=maximum)
    assert refused is not None and reason in refused
