"""`gateway serve --workers N`: pre-forked worker processes on one port, supervised by the parent.

The parent binds one SO_REUSEPORT socket per worker slot, forks, restarts a worker that dies, forwards SIGTERM/SIGINT
(a graceful stop) and SIGHUP (a reload), and gives up when workers keep dying. Each worker has its own loop and store.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger("gateway.workers")

# The kernel hashes each new connection onto one of the listening sockets of a SO_REUSEPORT group, so every worker
# gets its share even of a few long-lived keep-alive connections. A single shared socket would let one worker's
# accept loop swallow a whole burst of connections (asyncio accepts up to `backlog` per wake-up).
BACKLOG = 128
# Workers finish requests in flight after SIGTERM within server.shutdown_timeout (cli.serve cuts the rest); a worker
# still alive this long after that deadline (stuck closing its store) is killed.
STOP_GRACE = 5.0
STOP_TIMEOUT = 60.0 + STOP_GRACE
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ListenError(GatewayError):
    """The address cannot be bound (busy, not local, no permission)."""


@dataclass(frozen=True)
class RestartPolicy:
    """More than `max_restarts` unexpected worker exits within `window` seconds: the supervisor gives up."""

    max_restarts: int = 5
    window: float = 60.0
    # Delay before a restart grows with the recent deaths: a crash loop does not spin the CPU.
    backoff: float = 0.1
    max_backoff: float = 2.0


Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


def _addresses(host: str, port: int) -> list[tuple[int, Address]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    seen: list[tuple[int, Address]] = []
    for family, _type, _proto, _name, address in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, address) not in seen:
            seen.append((family, address))
    return seen


def _socket(family: int, address: Address, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # As asyncio does when it binds several addresses: "::" must not also claim the IPv4 port.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def bind(host: str, port: int, slots: int) -> list[list[socket.socket]]:
    """For each worker slot, one listening socket per address of `host` (all on the same port; port 0 picks one).

    A first bind without SO_REUSEPORT claims the address alone: a port another process already listens on is
    reported busy instead of being silently shared with it (SO_REUSEPORT would let both listen).
    """
    addresses = _addresses(host, port)
    if not addresses:
        raise ListenError(f"cannot listen on {host}:{port}: no IPv4/IPv6 address")
    chosen = port
    probes: list[socket.socket] = []
    try:
        for family, address in addresses:
            try:
                probe = _socket(family, (address[0], chosen, *address[2:]), reuse_port=False)
            except OSError as exc:
                raise ListenError(f"cannot listen on {host}:{chosen or port}: {exc.strerror}") from None
            probes.append(probe)
            chosen = int(probe.getsockname()[1])
    finally:
        for probe in probes:
            probe.close()
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(slots):
            group: list[socket.socket] = []
            groups.append(group)
            for family, address in addresses:
                try:
                    sock = _socket(family, (address[0], chosen, *address[2:]), reuse_port=True)
                except OSError as exc:
                    raise ListenError(f"cannot listen on {host}:{chosen}: {exc.strerror}") from None
                group.append(sock)
                sock.listen(BACKLOG)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends the worker SIGTERM when the supervisor dies, even by SIGKILL (no orphaned workers)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


WorkerMain = Callable[[int, Sequence[socket.socket]], int]


class Supervisor:
    """Forks one worker per socket group and keeps them running until SIGTERM/SIGINT (or too many deaths).

    Runs without an event loop: signals are blocked and taken synchronously with sigtimedwait, so a SIGCHLD can
    never be lost between a check and a sleep, and no asyncio state exists in the parent when it forks.
    """

    SIGNALS = frozenset({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})

    def __init__(
        self,
        groups: list[list[socket.socket]],
        worker_main: WorkerMain,
        policy: RestartPolicy | None = None,
        *,
        stop_timeout: float = STOP_TIMEOUT,
        on_exit: Callable[[int], None] | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self.groups = groups
        self.worker_main = worker_main
        self.policy = policy or RestartPolicy()
        self.stop_timeout = stop_timeout
        self.on_exit = on_exit  # called with the pid of every worker that exited (metrics.worker_exited)
        self.on_reload = on_reload  # SIGHUP, before it is forwarded: what a worker started from now on begins with
        self.pids: dict[int, int] = {}  # pid → slot
        self.deaths: deque[float] = deque()
        self.due: dict[int, float] = {}  # slot → monotonic time of its restart
        self.stopping = False
        self.failed = False
        self._mask: set[int | signal.Signals] = set()

    # --- worker side ------------------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                # A reload forwarded before the worker's loop handles SIGHUP must not end it (the default action).
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
                _die_with_parent(parent)
                for other, group in enumerate(self.groups):
                    if other != slot:
                        for sock in group:
                            sock.close()
                code = self.worker_main(slot, self.groups[slot])
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        self.pids[pid] = slot
        log.info("worker %d started (pid %d)", slot, pid)

    # --- supervisor side --------------------------------------------------------------------------------------

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            slot = self.pids.pop(pid, None)
            if slot is None:
                continue
            if self.on_exit is not None:
                self.on_exit(pid)
            if self.stopping:
                log.info("worker %d (pid %d) stopped: %s", slot, pid, _describe(status))
                continue
            now = time.monotonic()
            self.deaths.append(now)
            while self.deaths and now - self.deaths[0] > self.policy.window:
                self.deaths.popleft()
            if len(self.deaths) > self.policy.max_restarts:
                log.error(
                    "worker %d (pid %d) exited (%s): %d worker exits within %.0f s, giving up",
                    slot,
                    pid,
                    _describe(status),
                    len(self.deaths),
                    self.policy.window,
                )
                self.failed = True
                self._stop(signal.SIGTERM)
                continue
            delay = min(self.policy.max_backoff, self.policy.backoff * len(self.deaths))
            log.error("worker %d (pid %d) exited (%s); restarting in %.1f s", slot, pid, _describe(status), delay)
            self.due[slot] = now + delay

    def _stop(self, sig: signal.Signals) -> None:
        self.stopping = True
        self.due.clear()
        # The parent's copies of the listening sockets would keep the port accepting into a backlog that no worker
        # reads once the workers closed theirs: close them so new connections are refused during the graceful stop.
        for group in self.groups:
            for sock in group:
                sock.close()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def run(self) -> int:
        """Supervise until every worker has stopped; 0 after a requested stop, 1 when workers kept dying."""
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        deadline: float | None = None
        try:
            for slot in range(len(self.groups)):
                self._spawn(slot)
            while self.pids or self.due:
                now = time.monotonic()
                for slot, when in list(self.due.items()):
                    if when <= now:
                        del self.due[slot]
                        self._spawn(slot)
                waits = [when - now for when in self.due.values()]
                if deadline is not None:
                    waits.append(deadline - now)
                # At most a second: a lost wake-up (a signal taken by another thread) delays the loop, never stalls it.
                timeout = max(0.01, min([*waits, 1.0]))
                info = signal.sigtimedwait(self.SIGNALS, timeout)
                if info is not None and info.si_signo == signal.SIGHUP and not self.stopping:
                    log.info("SIGHUP: reloading %d workers", len(self.pids))
                    if self.on_reload is not None:
                        try:
                            self.on_reload()
                        except Exception:  # the supervisor must outlive whatever a reload meets
                            log.exception("reload in the supervisor failed")
                    for pid in self.pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGHUP)
                if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                    if self.stopping:
                        log.warning("second stop signal: killing the workers")
                        self._stop(signal.SIGKILL)
                    else:
                        log.info("shutting down %d workers", len(self.pids))
                        self._stop(signal.SIGTERM)
                self._reap()
                if self.stopping and deadline is None:
                    deadline = time.monotonic() + self.stop_timeout
                if deadline is not None and time.monotonic() >= deadline and self.pids:
                    log.error("workers did not stop within %.0f s: killing them", self.stop_timeout)
                    self._stop(signal.SIGKILL)
                    deadline = time.monotonic() + 5.0
        finally:
            if self.pids:  # an exception in the supervisor itself: leave no worker behind
                self._stop(signal.SIGKILL)
                for pid in list(self.pids):
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
            for group in self.groups:
                for sock in group:
                    sock.close()
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        return 1 if self.failed else 0
