"""TLS on the gateway's own port: real `git clone https://` and real skopeo (docker login, push, pull) against a
gateway serving a certificate of a test CA with two workers, a renewed certificate picked up on SIGHUP by every
worker, a broken renewal that changes nothing, and the configurations that must not start.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests import servers
from tests.gitcli import commit_file, git, git_env, with_credentials
from tests.oci import build_image
from tests.procs import Proc, free_port, start, stop, wait_http, wait_until
from tests.replicas import deploy_token, init, new_project
from tests.servers import ROOT, gateway_env, run_gateway, write_config
from tests.tlsca import Authority

SKOPEO = "/usr/bin/skopeo"


def served_serial(port: int, context: ssl.SSLContext) -> int:
    """The serial number of the certificate a new connection is handshaken with (verified against the CA)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None and tls.version() in ("TLSv1.2", "TLSv1.3")
        return int(x509.load_der_x509_certificate(der).serial_number)


def serve(config: Path, port: int, workers: int, context: ssl.SSLContext) -> Proc:
    argv = [sys.executable, "-m", "gateway", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"]
    proc = start("gateway", [*argv, "--workers", str(workers)], log=config.parent / "gateway.log",
                 env=gateway_env(config.parent), cwd=ROOT)  # fmt: skip
    try:
        wait_http(proc, f"https://127.0.0.1:{port}/-/health", context=context)
    except BaseException:
        stop(proc)
        raise
    return proc


def by_workers(proc: Proc, message: str) -> int:
    """Log lines of the workers (not of their supervisor, which reloads its own copy too) holding `message`."""
    return sum('"worker": ' in line and message in line for line in proc.log.read_text().splitlines())


def skopeo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin"), "REGISTRY_AUTH_FILE": str(home / "a.json")}
    return subprocess.run([SKOPEO, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_git_and_docker_over_tls_and_a_renewal_on_sighup(tmp_path: Path) -> None:
    authority = Authority.make(tmp_path / "ca")
    certificate, key = tmp_path / "tls" / "gateway.crt", tmp_path / "tls" / "gateway.key"
    certificate.parent.mkdir()
    first = authority.issue(certificate, key)
    port, registry_port = free_port(), free_port()
    config = write_config(
        tmp_path / "gw",
        sections={
            "server": {"tls_certificate": str(certificate), "tls_key": str(key)},
            "registry": {"backend": f"http://127.0.0.1:{registry_port}"},
        },
    )
    root = init(config)
    context = authority.client()
    registry_cert = config.parent / "data" / "registry.crt"
    realm = f"https://127.0.0.1:{port}/jwt/auth"
    with servers.registry(tmp_path / "registry", registry_cert, realm, registry_port):
        proc = serve(config, port, 2, context)
        try:
            assert '"listening on https://127.0.0.1:' in proc.log.read_text()
            url = f"https://127.0.0.1:{port}"
            made_project = new_project(url, root, "secure", tls=context)
            project = made_project.path
            scopes = ("read_repository", "read_registry", "write_registry")
            made = deploy_token(url, root, made_project, scopes=scopes, tls=context)
            username, secret = made["username"], made["token"]

            # git: a developer's push and a deploy token's clone, both verifying the gateway's certificate.
            env = git_env(tmp_path / "home") | {"GIT_SSL_CAINFO": str(authority.file)}
            work = tmp_path / "work"
            git(env, "init", "-q", "-b", "main", str(work)).check()
            head = commit_file(env, work, "README", "over TLS\n")
            git(
                env, "push", "-q", with_credentials(f"{url}/{project}.git", "root", root), "HEAD:main", cwd=work
            ).check()
            clone = tmp_path / "clone"
            git(env, "clone", "-q", with_credentials(f"{url}/{project}.git", username, secret), str(clone)).check()
            assert git(env, "rev-parse", "HEAD", cwd=clone).check().out.strip() == head
            untrusted = git(
                git_env(tmp_path / "home2"), "ls-remote", with_credentials(f"{url}/{project}.git", username, secret)
            )
            assert untrusted.code != 0 and "certificate" in untrusted.err.lower(), untrusted.err

            # docker: skopeo logs in, pushes and pulls through the gateway, trusting the test CA (--cert-dir).
            home = tmp_path / "skopeo"
            home.mkdir()
            image = tmp_path / "image"
            build_image(image, size=64 * 1024)
            host, creds = f"127.0.0.1:{port}", f"{username}:{secret}"
            certs = str(authority.file.parent)
            logged = skopeo(home, "login", "--cert-dir", certs, "-u", username, "-p", secret, host)
            assert logged.returncode == 0, logged.stderr
            pushed = skopeo(home, "copy", "--dest-cert-dir", certs, "--dest-creds", creds, f"oci:{image}:v1",
                            f"docker://{host}/{project}:v1")  # fmt: skip
            assert pushed.returncode == 0, pushed.stderr
            pulled = skopeo(home, "copy", "--src-cert-dir", certs, "--src-creds", creds, f"docker://{host}/{project}:v1",
                            f"dir:{tmp_path / 'pulled'}")  # fmt: skip
            assert pulled.returncode == 0, pulled.stderr

            # A renewal: new files, then SIGHUP to the supervisor, which every worker reloads.
            assert served_serial(port, context) == first
            second = authority.issue(certificate, key)
            os.kill(proc.pid, signal.SIGHUP)
            assert wait_until(lambda: by_workers(proc, "TLS certificate reloaded") == 2)
            assert {served_serial(port, context) for _ in range(12)} == {second}  # both workers serve it

            # A renewal half-done (a key that is not the certificate's): refused, the certificate before is served.
            authority.issue(tmp_path / "unused.crt", tmp_path / "stray.key")
            key.write_bytes((tmp_path / "stray.key").read_bytes())
            os.kill(proc.pid, signal.SIGHUP)
            assert wait_until(lambda: by_workers(proc, "TLS certificate not reloaded") == 2)
            proc.assert_running()
            assert {served_serial(port, context) for _ in range(12)} == {second}
            assert _health(url, context) == 200
        finally:
            stop(proc)


def _health(url: str, context: ssl.SSLContext) -> int:
    import urllib.request

    with urllib.request.urlopen(f"{url}/-/health", context=context, timeout=5) as response:  # noqa: S310
        return int(response.status)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"tls_certificate": "{cert}"}, "set both (TLS) or neither"),
        ({"tls_certificate": "{cert}", "tls_key": "{missing}"}, "server.tls_key: {missing} is missing"),
        ({"tls_certificate": "{cert}", "tls_key": "{other}"}, "do not make a certificate and its key"),
        ({"tls_certificate": "{key}", "tls_key": "{key}"}, "do not make a certificate and its key"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_certificate_that_does_not_load_stops_the_start(
    tmp_path: Path, server: dict[str, str], message: str, workers: int
) -> None:
    authority = Authority.make(tmp_path / "ca")
    files = {
        "cert": tmp_path / "a.crt",
        "key": tmp_path / "a.key",
        "other": tmp_path / "b.key",
        "missing": tmp_path / "none",
    }
    authority.issue(files["cert"], files["key"])
    authority.issue(tmp_path / "b.crt", files["other"])
    names = {name: str(path) for name, path in files.items()}
    config = write_config(tmp_path / "gw", sections={"server": {k: v.format(**names) for k, v in server.items()}})
    if "set both" not in message:
        init(config)
    started = time.monotonic()
    result = run_gateway(config, "serve", "--listen", "127.0.0.1:0", "--workers", str(workers), timeout=60)
    assert result.returncode == 2, result.stderr
    assert message.format(**names) in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert time.monotonic() - started < 30
