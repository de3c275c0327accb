"""Proof that an engine is the one a local node started for a given pod.

The node hands each engine a secret token (``FERRY_MOCK_TOKEN``) and, on every readiness probe,
a fresh challenge in the ``X-Ferry-Challenge`` header; the engine answers ``/health`` with
``X-Ferry-Proof: HMAC-SHA256(token, challenge)``. An engine of another pod (or of another stack on
the same machine) that happens to answer on the same address cannot produce the proof, so the
node never reports a pod Ready on someone else's 200.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ENV_TOKEN = "FERRY_MOCK_TOKEN"
CHALLENGE_HEADER = "X-Ferry-Challenge"
PROOF_HEADER = "X-Ferry-Proof"


def new_secret() -> str:
    """A fresh random value, for a pod's token or a probe's challenge."""
    return secrets.token_hex(16)


def proof(token: str, challenge: str) -> str:
    return hmac.new(token.encode(), challenge.encode(), hashlib.sha256).hexdigest()


def verify(token: str, challenge: str, answer: str | None) -> bool:
    return answer is not None and hmac.compare_digest(proof(token, challenge), answer)
