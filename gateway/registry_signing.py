"""What this process signs registry tokens with: the key, its signing processes and its reused tokens, replaced as
one when the key files are loaded again (SIGHUP, after `gateway registry-key activate` or `retire`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from gateway import signing_keys
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.signing_keys import SignedTokens, SigningKey
from gateway.signing_processes import SigningProcesses, per_worker

log = logging.getLogger("gateway.signing")


def load_key(config: Config) -> SigningKey | None:
    """The key and its certificate bundle, None before `gateway init` made them."""
    key_path, cert_path = Path(config.registry.signing_key), Path(config.registry.certificate)
    if not key_path.exists() and not cert_path.exists():
        return None
    return signing_keys.load(key_path, cert_path, algorithm=config.registry.algorithm)


@dataclass(frozen=True)
class Signer:
    """One key with what belongs to it: a request takes one Signer and uses it throughout, so a token's header
    (its kid) and its signature always come from the same key, whatever a reload does meanwhile."""

    key: SigningKey
    processes: SigningProcesses
    reused: SignedTokens


class RegistrySigning:
    """The Signer in use (None until `gateway init` made a key)."""

    def __init__(self, config: Config, key: SigningKey | None) -> None:
        self.config = config
        self.current: Signer | None = self._signer(key) if key is not None else None
        self._retiring: set[asyncio.Task[None]] = set()

    def _signer(self, key: SigningKey) -> Signer:
        registry, server = self.config.registry, self.config.server
        count = per_worker(registry.signing_processes, _cores(), server.workers)
        # A tenth of the token lifetime: a reused token still has at least 90 % of its life left.
        return Signer(key, SigningProcesses(key, count), SignedTokens(window=max(1, registry.token_ttl // 10)))

    def reload(self) -> bool:
        """Load the key files again; True when another key signs from now on. A key that does not load (or is not
        of registry.algorithm, which a restart then needs) leaves the one in use, and says why in the log."""
        try:
            key = load_key(self.config)
        except GatewayError as exc:
            log.error("registry signing key not reloaded, the one loaded before still signs: %s", exc)
            return False
        current = self.current
        if key is None or (current is not None and current.key.kid == key.kid):
            if current is not None and key is not None:
                # The same key, perhaps another bundle (a rotation staged or retired): what refresh tokens of
                # earlier releases are checked against follows it.
                self.current = replace(current, key=replace(current.key, trusted=key.trusted))
            return False
        self.current = self._signer(key)
        log.info("registry signing key reloaded: kid %s (%s)", key.kid, key.algorithm)
        if current is not None:
            # Requests that took the old Signer finish with it: its processes answer what they were asked, then
            # stop; a signature asked of them after that is made in the worker with the old key, which matches the
            # header it goes under.
            task = asyncio.get_running_loop().create_task(current.processes.retire())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return True

    async def close(self) -> None:
        if self.current is not None:
            await self.current.processes.close()
        await asyncio.gather(*self._retiring, return_exceptions=True)


def _cores() -> int:
    return os.cpu_count() or 1
