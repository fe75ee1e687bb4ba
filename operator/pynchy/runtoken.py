"""Per-run tokens: HS256 JWTs the operator issues into each run's Secret and the gateway verifies.

A token names exactly one AgentRun (namespace, name, uid) and its Group, and expires after the
run's hard timeout plus a grace period. The signing key is shared by the operator and the
gateway (PYNCHY_RUN_TOKEN_KEY, from a Secret); agent pods only ever see their own token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jwt

from pynchy.errors import PynchyError

AUDIENCE = "pynchy-run-api"
ISSUER = "pynchy-operator"
GRACE_SECONDS = 300


class TokenError(PynchyError):
    """The token is missing, malformed, forged or expired; the message says which."""


@dataclass(frozen=True)
class RunClaims:
    namespace: str
    run: str
    uid: str
    group: str
    expires: int  # unix seconds

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.run}"


def issue(key: str, claims: RunClaims, issued_at: int) -> str:
    """Deterministic for the same inputs, so re-reconciling a run never rewrites its Secret."""
    payload = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": claims.subject,
        "uid": claims.uid,
        "grp": claims.group,
        "iat": issued_at,
        "exp": claims.expires,
    }
    return jwt.encode(payload, key, algorithm="HS256")


@lru_cache(maxsize=1024)
def _decode(key: str, token: str) -> tuple[tuple[str, Any], ...]:
    """The signed claims of a token (its signature, audience and issuer checked). Cached: a run sends
    the same token with every model call, and the same bytes under the same key always decode the
    same; only valid tokens are kept (a failure raises, which lru_cache does not store)."""
    payload = jwt.decode(
        token,
        key,
        algorithms=["HS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        # Expiry is checked by verify() against its `now` on every call, so tests and callers share one clock.
        options={"require": ["exp", "sub", "aud", "iss"], "verify_exp": False},
    )
    return tuple(payload.items())


def verify(key: str, token: str, now: float | None = None) -> RunClaims:
    try:
        payload = dict(_decode(key, token))
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid run token: {exc}") from exc
    if (time.time() if now is None else now) >= payload["exp"]:
        raise TokenError("run token expired; the run is over")
    namespace, sep, run = str(payload["sub"]).partition("/")
    if not sep or not payload.get("uid") or not payload.get("grp"):
        raise TokenError("invalid run token: missing run identity")
    return RunClaims(namespace, run, str(payload["uid"]), str(payload["grp"]), int(payload["exp"]))
