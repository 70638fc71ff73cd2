"""gateway/pypi_form.py: twine's upload form read strictly, so that the file the gateway checks is the file the
backend stores (pypiserver parses with Python's cgi module, which the forms below are also run through)."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from io import BytesIO

import pytest

from gateway import pypi_form
from gateway.errors import BadRequest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import cgi  # pypiserver's parser (through bottle 0.12): deprecated, still what it runs on Python 3.11


class Chunks:
    """Feeds a body in small pieces, as a network would (the parser must cope with any split)."""

    def __init__(self, body: bytes, size: int) -> None:
        self.parts = [body[i : i + size] for i in range(0, len(body), size)]

    async def read(self, _n: int = -1) -> bytes:
        return self.parts.pop(0) if self.parts else b""


def field(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def file(filename: str, data: bytes = b"WHEELBYTES" * 100, name: str = "content") -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )


def form(*parts: bytes, end: bytes = b"--BOUND--\r\n") -> bytes:
    return b"".join(b"--BOUND\r\n" + part for part in parts) + end


WHEEL = "demo_pkg-1.0-py3-none-any.whl"
FIELDS = (field(":action", "file_upload"), field("name", "demo-pkg"), field("version", "1.0"))
TWINE = form(
    *FIELDS, field("description", "x\r\n" * 50), field("classifiers", "a"), field("classifiers", "b"), file(WHEEL)
)


def cgi_files(body: bytes) -> list[tuple[str, str | None]]:
    """The (name, file name) of each part as pypiserver's parser reads the body the backend receives."""
    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": pypi_form.content_type("BOUND"),
        "CONTENT_LENGTH": str(len(body)),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parsed = cgi.FieldStorage(fp=BytesIO(body), environ=environ, keep_blank_values=True)
    return [(item.name, item.filename) for item in parsed.list or []]


async def through(body: bytes, split: int = 64) -> tuple[bytes, BadRequest | None]:
    """What reaches the backend (the head, then the rest through `checked`), and the refusal that stopped it."""
    reader = Chunks(body, split)
    head, upload = await pypi_form.read_head(reader, "BOUND", 1 << 20)  # type: ignore[arg-type]

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        while chunk := await reader.read():
            yield chunk

    got = b""
    try:
        async for chunk in pypi_form.checked(chunks(), "BOUND", upload.data_start):
            got += chunk
    except BadRequest as refused:
        return got, refused
    return got, None


@pytest.mark.parametrize("split", [1, 7, 100, 1 << 20])
async def test_twine_form_passes_unchanged(split: int) -> None:
    head, upload = await pypi_form.read_head(Chunks(TWINE, split), "BOUND", 1 << 20)  # type: ignore[arg-type]
    assert (upload.name, upload.version, upload.action, upload.filename) == ("demo-pkg", "1.0", "file_upload", WHEEL)
    assert TWINE.startswith(head) and head[upload.data_start :].startswith(
        b"WHEELBYTES"[: len(head) - upload.data_start]
    )
    assert await through(TWINE, split) == (TWINE, None)  # nothing lost or added
    assert [f for f in cgi_files(TWINE) if f[1] is not None] == [("content", WHEEL)]


@pytest.mark.parametrize(
    ("body", "maximum", "message"),
    [
        (form(*FIELDS), 1 << 20, "no `content` file part"),
        (form(field("name", "x"), file(WHEEL)), 1 << 20, ":action, version must come before the file"),
        (form(*FIELDS, file("")), 1 << 20, "has no file name"),
        (form(*FIELDS, field("description", "y" * 5000), file(WHEEL)), 1000, "too large"),
        (b"no multipart at all", 1 << 20, "no `content` file part"),
        # Read differently by cgi (pypiserver) and a lax parser: each one refused.
        (form(*FIELDS, field("name", "other"), file(WHEEL)), 1 << 20, "name is repeated"),
        (form(field(":action", "remove_pkg"), *FIELDS, file(WHEEL)), 1 << 20, ":action is repeated"),
        (form(*FIELDS, file("other-1.0.tar.gz", name="sdist"), file(WHEEL)), 1 << 20, "may be files, not `sdist`"),
        (b"preamble\r\n" + form(*FIELDS, file(WHEEL)), 1 << 20, "must start with its boundary"),
        (
            form(*FIELDS[:2], b'Content-Disposition: form-data; name="version"\r\n\r\n1.0\n--BOUND\r\n' + file(WHEEL)),
            1 << 20,
            "does not follow a CRLF",
        ),
        (form(*FIELDS, field("x", "1\r\n--BOUND \r\n"), file(WHEEL)), 1 << 20, "more after the boundary"),
        (
            form(
                *FIELDS,
                b'Content-Disposition: form-data; name="content"; filename="a-1.tar.gz"; filename="'
                + WHEEL.encode()
                + b'"\r\n\r\nx\r\n',
            ),
            1 << 20,
            "not form-data with a quoted name",
        ),
        (
            form(
                *FIELDS, b"Content-Disposition: form-data; name=content; filename=" + WHEEL.encode() + b"\r\n\r\nx\r\n"
            ),
            1 << 20,
            "not form-data with a quoted name",
        ),
        (
            form(
                *FIELDS,
                b"Content-Disposition: form-data; name=\"content\"; filename*=UTF-8''"
                + WHEEL.encode()
                + b"\r\n\r\nx\r\n",
            ),
            1 << 20,
            "not form-data with a quoted name",
        ),
        (form(*FIELDS, b"X-Extra: 1\r\n" + file(WHEEL)), 1 << 20, "a header other than"),
        # A boundary line right after a part's blank line: cgi ends an empty value there and reads the next part.
        (
            form(
                *FIELDS,
                b'Content-Disposition: form-data; name="x"\r\n\r\n' + b"--BOUND\r\n" + field(":action", "r"),
                file(WHEEL),
            ),
            1 << 20,
            "does not follow a CRLF of its own",
        ),
        (form(*FIELDS, b"Content-Type: multipart/mixed; boundary=X\r\n" + file(WHEEL)), 1 << 20, "a form itself"),
        (
            form(*FIELDS, b"Content-Type: Application/X-WWW-Form-Urlencoded\r\n" + field("a", "b"), file(WHEEL)),
            1 << 20,
            "a form itself",
        ),
        (
            form(*FIELDS, b'Content-Disposition: form-data; name="a"\r\n' + field("content", "x")),
            1 << 20,
            "a header other than",
        ),
        (
            form(*FIELDS, file(WHEEL + ".asc", b"sig", name="gpg_signature"), file("demo_pkg-2.0-py3-none-any.whl")),
            1 << 20,
            "is not the file's",
        ),
    ],
)
async def test_head_refuses_what_twine_would_not_send(body: bytes, maximum: int, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        await pypi_form.read_head(Chunks(body, 64), "BOUND", maximum)  # type: ignore[arg-type]
    assert message in info.value.message


async def test_a_signature_of_the_file_passes() -> None:
    body = form(*FIELDS, file(WHEEL + ".asc", b"sig", name="gpg_signature"), file(WHEEL))
    assert await through(body) == (body, None)


@pytest.mark.parametrize(
    ("after", "message"),
    [
        # A second file of another project, which cgi (last value wins) would hand pypiserver.
        (file("victim-9.9.tar.gz", b"MALICIOUS") + b"--BOUND--\r\n", "goes on after its `content` file"),
        # Another action on another project's file.
        (field(":action", "remove_pkg") + field("name", "victim") + b"--BOUND--\r\n", "goes on after"),
        (b"--BOUND--\r\nepilogue", "goes on after"),
    ],
)
async def test_nothing_after_the_file_reaches_the_backend(after: bytes, message: str) -> None:
    body = form(*FIELDS, file(WHEEL), end=b"--BOUND\r\n" + after)
    got, refused = await through(body)
    assert refused is not None and message in refused.message
    assert got == body[: body.index(b"WHEELBYTES") + 1000]  # up to the file's last byte: no delimiter after it


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # cgi takes a boundary line after a bare LF: a second file inside the first one's bytes.
        (form(*FIELDS, file(WHEEL, b"abc\n--BOUND\r\n" + file("victim-9.9.tar.gz"))), "hold a boundary line"),
        (form(*FIELDS, end=b"") + b"--BOUND\r\n" + file(WHEEL)[:-2], "ends without its closing boundary"),
        (form(*FIELDS, file(WHEEL), end=b"--BOUND--\r\n\r\n"), "goes on after"),
        # An empty file whose boundary line follows the blank line at once, then a second file (found by a review).
        (form(*FIELDS, file(WHEEL, b"")[:-2] + b"--BOUND\r\n" + file("victim-9.9.tar.gz")), "goes on after"),
    ],
)
async def test_the_file_ends_at_the_closing_boundary(body: bytes, message: str) -> None:
    _, refused = await through(body)
    assert refused is not None and message in refused.message


@pytest.mark.parametrize("value", ["", "€", "a b", "x" * 71, 'a"b', "a;b"])
def test_boundaries_outside_rfc_2046_are_refused(value: str) -> None:
    with pytest.raises(BadRequest):
        pypi_form.boundary(value)
