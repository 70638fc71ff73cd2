"""Prometheus metrics at /-/metrics: requests, authentication outcomes, backends, tokens issued, bytes streamed.

Labels come from small fixed sets (route family, status code, outcome, backend name): never a path, a user or an
address. Under `gateway serve --workers N` each worker writes to PROMETHEUS_MULTIPROC_DIR and any scrape sums them all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from ipaddress import ip_address, ip_network

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gateway.principals import Anonymous, DeployTokenPrincipal, Mode, Principal, UserPrincipal

# prometheus-client picks its storage when it is first imported: `gateway serve --workers N` sets this to a fresh
# directory before anything imports this module (cli.serve_workers), so every worker's samples land in its files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What generate_latest writes: the Prometheus text format 0.0.4 (every Prometheus version reads it).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# In multiprocess mode every increment asks os.getpid() (a system call) whether the process forked since. The pid
# kept here is refreshed by the fork itself (os.register_at_fork), which answers the same question for free.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


def _current_pid() -> int:
    return _pid


os.register_at_fork(after_in_child=_refresh_pid)
if os.environ.get(MULTIPROC_ENV):
    values.ValueClass = values.MultiProcessValue(process_identifier=_current_pid)  # type: ignore[no-untyped-call]

# Request latency: from sub-millisecond token checks to long clones (which are not a latency so much as a transfer).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests answered, by route family and status code", ("family", "status")
)
REQUEST_SECONDS = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (streamed bodies included), by route family",
    ("family",),
    buckets=_LATENCY,
)
AUTHENTICATIONS = Counter(
    "gateway_authentications_total",
    "Secret checks by mode (login: git and /jwt/auth; packages; api; web: the sign-in form) and outcome: anonymous,"
    " deploy_token, pat, password,"
    " session, or failed",
    ("mode", "outcome"),
)
BACKEND_SECONDS = Histogram(
    "gateway_backend_response_seconds",
    "Time until a backend's response headers (git, registry, package servers)",
    ("backend",),
    buckets=_LATENCY,
)
BACKEND_ERRORS = Counter(
    "gateway_backend_errors_total",
    "Backend failures: timeout or unreachable before answering, failed mid-response, or a failed git child",
    ("backend", "kind"),
)
STREAMED_BYTES = Counter(
    "gateway_streamed_bytes_total",
    "Body bytes streamed between clients and backends, by backend and direction (upload: client to backend)",
    ("backend", "direction"),
)
TOKENS_ISSUED = Counter(
    "gateway_tokens_issued_total",
    "Tokens handed out: deploy tokens and personal access tokens created, registry JWTs minted or reused from the"
    " short cache, registry refresh tokens",
    ("kind",),
)

# labels() takes a lock and normalises its arguments on every call; the hot path keeps the children it made.
_request_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
_children: dict[tuple[object, ...], Counter] = {}


def _child(metric: Counter, *labels: str) -> Counter:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def request_done(family: str, status: int, seconds: float) -> None:
    """One answered request (request_context_middleware)."""
    children = _request_children.get((family, status))
    if children is None:
        children = (REQUESTS.labels(family, str(status)), REQUEST_SECONDS.labels(family))
        _request_children[(family, status)] = children
    children[0].inc()
    children[1].observe(seconds)


def auth_outcome(mode: Mode, principal: Principal | None) -> None:
    """One secret check (authn.authenticate): who it proved, or that it failed."""
    if principal is None:
        outcome = "failed"
    elif isinstance(principal, UserPrincipal):
        outcome = principal.via
    elif isinstance(principal, DeployTokenPrincipal):
        outcome = "deploy_token"
    else:
        assert isinstance(principal, Anonymous)
        outcome = "anonymous"
    _child(AUTHENTICATIONS, mode.value, outcome).inc()


def web_sign_in(principal: Principal | None) -> None:
    """A password checked by the UI's sign-in form (web/auth.py), counted beside authn's secret checks."""
    _child(AUTHENTICATIONS, "web", "failed" if principal is None else "password").inc()


def _backend(name: str) -> str:
    # The names proxy.forward callers give (git, registry, "pypi package", ...): a fixed set in the code.
    return name.replace(" ", "_")


def backend_answered(backend: str, seconds: float) -> None:
    """A backend's response headers arrived `seconds` after the request left."""
    BACKEND_SECONDS.labels(_backend(backend)).observe(seconds)


def backend_failed(backend: str, kind: str) -> None:
    """kind: timeout | unreachable or failed (before answering) | mid_response | exit_status (a git child)."""
    BACKEND_ERRORS.labels(_backend(backend), kind).inc()


def streamed(backend: str, *, download: int = 0, upload: int = 0) -> None:
    """Body bytes of one forwarded exchange: `download` to the client, `upload` from it."""
    if download:
        STREAMED_BYTES.labels(_backend(backend), "download").inc(download)
    if upload:
        STREAMED_BYTES.labels(_backend(backend), "upload").inc(upload)


def token_issued(kind: str) -> None:
    """kind: deploy_token | personal_access_token | registry_jwt_minted | registry_jwt_reused | refresh_token."""
    _child(TOKENS_ISSUED, kind).inc()


# --- exposition -------------------------------------------------------------------------------------------------


def allowed(client: str, allowed_ips: Iterable[str]) -> bool:
    """GitLab's monitoring IP allowlist: is `client` (an address) inside one of the CIDRs?"""
    try:
        address = ip_address(client)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ip_network(cidr, strict=False) for cidr in allowed_ips)


def exposition() -> bytes:
    """The whole server's metrics: every worker's files in multiprocess mode, else this process's registry."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(registry)


# --- the supervisor's side (gateway serve --workers N) ----------------------------------------------------------


def worker_exited(pid: int) -> None:
    """A worker is gone: its live gauges go with it; its counters stay counted (they are the server's history)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # untyped upstream
