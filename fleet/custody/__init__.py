"""Chain of custody: the hash-chained custody ledger, signed checkpoints and verification.

Pure (DESIGN.md principle 1): no gRPC, database or web imports; storage is
`fleet.store.ledger`.
"""

from fleet.custody.ledger import (
    GENESIS_HASH,
    AuthFactor,
    ChainHead,
    Checkpoint,
    CustodyEvent,
    EventDraft,
    EventType,
    Ledger,
    Problem,
    ProblemKind,
    VerifyReport,
    canonical_bytes,
    compute_hash,
    seal,
    sign_checkpoint,
    verify,
)

__all__ = [
    "GENESIS_HASH",
    "AuthFactor",
    "ChainHead",
    "Checkpoint",
    "CustodyEvent",
    "EventDraft",
    "EventType",
    "Ledger",
    "Problem",
    "ProblemKind",
    "VerifyReport",
    "canonical_bytes",
    "compute_hash",
    "seal",
    "sign_checkpoint",
    "verify",
]
