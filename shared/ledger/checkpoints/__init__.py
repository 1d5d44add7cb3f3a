"""Signed checkpoints: the log's state at an instant, anchored outside the database.

The hash chains prove that a stream was not changed *unless* whoever changed it recomputed the chain, which anyone
with write access to the database can do. A checkpoint closes that gap for everything recorded before it:

- a **Merkle root** over every stream's ``(tenant, customer, version, head hash)`` at that point, leaves sorted by
  (tenant, customer) in code-point order; the leaves travel with the checkpoint so verify can name the streams that
  changed;
- the **global order** up to that point: the SHA-256 of the ``(position, tx_id, tenant, customer, version, hash)``
  lines of every covered event in replay order, so moving an event in the global order (a swapped position or
  transaction id) is caught, not only a change inside a stream;
- a timestamp, the counts, the digest of the previous checkpoint, and an **Ed25519 signature** made with a private
  key that lives in a file the database never holds (``RELANCE_CHECKPOINT_KEY_FILE``).

What a checkpoint covers is fixed by its horizon. PostgreSQL: every event whose transaction id is below
``pg_snapshot_xmin`` of the writing transaction's snapshot, i.e. every transaction that had finished, so a commit
still in flight is never half covered. SQLite (one writer at a time): every event up to the highest position.

Each checkpoint is stored in the ``checkpoints`` table and can be exported as a JSON file; an attacker who deletes or
rewrites rows of that table is caught by the exported copies (``relance verify --checkpoints DIR``). Recomputing a
checkpoint's signature needs the private key, so rewriting history that a checkpoint covers cannot be hidden.
What happened after the newest checkpoint is only as trustworthy as the database: verify lists it ("appended
since checkpoint N") for an auditor to match against the ERP.
"""

from shared.ledger.checkpoints.document import (
    EMPTY_ROOT,
    FORMAT,
    Checkpoint,
    CheckpointError,
    CheckpointRefused,
    Head,
    Horizon,
    Leaf,
    StreamKey,
    merkle_root,
    order_line,
    sorted_leaves,
)
from shared.ledger.checkpoints.keys import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_keys,
    key_id,
    load_private_key,
    load_public_key,
)
from shared.ledger.checkpoints.reconcile import Reconciled, iter_since, reconcile
from shared.ledger.checkpoints.store import export, file_name, read_files, stored, summaries, write
from shared.ledger.checkpoints.walk import Cut, Seen, compare_cut, walk

__all__ = [
    "EMPTY_ROOT",
    "FORMAT",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "Checkpoint",
    "CheckpointError",
    "CheckpointRefused",
    "Cut",
    "Head",
    "Horizon",
    "Leaf",
    "Reconciled",
    "Seen",
    "StreamKey",
    "compare_cut",
    "export",
    "file_name",
    "generate_keys",
    "iter_since",
    "key_id",
    "load_private_key",
    "load_public_key",
    "merkle_root",
    "order_line",
    "read_files",
    "reconcile",
    "sorted_leaves",
    "stored",
    "summaries",
    "walk",
    "write",
]
