"""Index and metadata documents (pure): PyPI simple pages (PEP 503) and npm package documents, read from a backend,
filtered and rewritten so that every link points at the gateway (docs/packages.md, "Documents").

Only links into the backend's root survive: a link elsewhere (e.g. pypiserver's fallback to pypi.org) is dropped
from PyPI pages, so a client never leaves the gateway with the deploy token it was given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html import escape, unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

from gateway import packages

# PEP 503 / 592 / 658 / 714 anchor attributes a client may need; everything else is dropped.
_KEPT_ATTRIBUTES = (
    "data-requires-python",
    "data-yanked",
    "data-gpg-sig",
    "data-dist-info-metadata",
    "data-core-metadata",
)


# (href, text, kept attributes) of one link on a generated simple page.
Link = tuple[str, str, tuple[tuple[str, str | None], ...]]


@dataclass(frozen=True)
class Anchor:
    href: str
    text: str
    attrs: tuple[tuple[str, str | None], ...] = ()


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[Anchor] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._current = {"attrs": attrs, "text": ""}

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current["text"] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._current is not None:
            attrs = self._current["attrs"]
            href = next((v for k, v in attrs if k == "href" and v), None)
            if href is not None:
                kept = tuple((k, v) for k, v in attrs if k in _KEPT_ATTRIBUTES)
                self.anchors.append(Anchor(href, self._current["text"].strip(), kept))
            self._current = None


def anchors(html: str) -> list[Anchor]:
    parser = _AnchorParser()
    parser.feed(html)
    parser.close()
    return parser.anchors


def relative_to(url: str, roots: list[str]) -> str | None:
    """The part of an absolute `url` below one of `roots` (each ending in '/'), or None when it is elsewhere."""
    for root in roots:
        if url.startswith(root):
            return url[len(root) :]
    return None


def file_path(rel: str) -> list[str] | None:
    """Segments of a backend-relative file path, each checked like a stored name; None for anything else."""
    if not rel or "?" in rel or "#" in rel:
        return None
    segments = [unquote(s) for s in rel.split("/")]
    return segments if all(packages.segment_ok(s) for s in segments) else None


def simple_page(title: str, links: list[Link]) -> bytes:
    """A PEP 503 page: (href, text, attributes) per link, every value escaped."""
    rows = []
    for href, text, attrs in links:
        extra = "".join(f' {k}="{escape(v)}"' if v is not None else f" {k}" for k, v in attrs)
        rows.append(f'<a href="{escape(href)}"{extra}>{escape(text)}</a><br/>')
    body = "\n".join(rows)
    return (
        f'<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
        f"<title>{escape(title)}</title></head>\n<body><h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    ).encode()


def pypi_project_links(html: str, *, page_url: str, roots: list[str], name: str, files_base: str) -> list[Link]:
    """The file links of a backend's page for project `name`, rewritten to `files_base<sha256>/<path>`.

    A link is kept only when it lies under the backend root and its file belongs to `name` by its file name
    (so a page can never hand out another project's files)."""
    out = []
    for anchor in anchors(html):
        url, fragment = urldefrag(urljoin(page_url, anchor.href))
        rel = relative_to(url, roots)
        segments = file_path(rel) if rel is not None else None
        if segments is None or packages.pypi_file_project(segments[-1]) != name:
            continue
        sha256 = fragment[len("sha256=") :] if fragment.startswith("sha256=") else ""
        digest = sha256 if len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256) else "-"
        href = f"{files_base}{digest}/{'/'.join(packages.join('', [s]) for s in segments)}"
        if fragment:
            href += "#" + fragment
        out.append((href, segments[-1], anchor.attrs))
    return out


def pypi_index_names(html: str) -> list[str]:
    """The normalised project names listed on a backend's root index (the anchor texts)."""
    names = {packages.pypi_name(a.text) for a in anchors(html)}
    return sorted(n for n in names if n)


def origin_roots(backend_root: str, client_origin: str) -> list[str]:
    """The prefixes under which a backend may write its own absolute URLs: its root, or the client-facing origin
    with the root's path when it builds URLs from the forwarded Host (verdaccio does; packages.md §2)."""
    path = urlsplit(backend_root).path or "/"
    return [backend_root, client_origin.rstrip("/") + path]


def npm_document(raw: bytes, *, roots: list[str], gateway_base: str) -> bytes:
    """An npm package document with every `versions.*.dist.tarball` under the backend root moved to the gateway.

    Raises ValueError for a body that is not a JSON object."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    versions = doc.get("versions")
    if isinstance(versions, dict):
        for version in versions.values():
            dist = version.get("dist") if isinstance(version, dict) else None
            tarball = dist.get("tarball") if isinstance(dist, dict) else None
            if isinstance(dist, dict) and isinstance(tarball, str):
                rel = relative_to(tarball, roots)
                if rel is not None:
                    dist["tarball"] = gateway_base + rel
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# --- backend errors -------------------------------------------------------------------------------------------------

MAX_MESSAGE = 200
_PRE = re.compile(r"<pre>(.*?)</pre>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def backend_message(content_type: str, body: bytes) -> str:
    """The first line of what a backend said in an error body, printable ASCII of at most MAX_MESSAGE characters:
    the first <pre> of an HTML page (bottle's error page, pypiserver's, shows the request's internal URL
    above it), a JSON `error` or `message`, or plain text; "" when it said nothing usable."""
    text = body.decode("utf-8", "replace")
    mime = content_type.partition(";")[0].strip().lower()
    if mime == "text/html":
        found = _PRE.search(text)
        text = unescape(_TAG.sub(" ", found.group(1))) if found else ""
    elif mime == "application/json" or mime.endswith("+json"):
        try:
            doc = json.loads(text)
        except ValueError:
            return ""
        said = doc.get("error", doc.get("message")) if isinstance(doc, dict) else None
        text = said if isinstance(said, str) else ""
    elif mime != "text/plain":
        return ""
    line = next((stripped for raw in text.splitlines() if (stripped := raw.strip())), "")
    return printable(line)


def printable(text: str) -> str:
    """`text` as printable ASCII (fit for a status line's reason phrase, RFC 9112 §4), at most MAX_MESSAGE long."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text[: MAX_MESSAGE + 1])
    return out if len(out) <= MAX_MESSAGE else out[: MAX_MESSAGE - 3] + "..."
