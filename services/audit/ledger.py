"""The ledger's cryptography, with no I/O: canonical encoding, the hash chain, the RFC 9162 Merkle
tree, signed checkpoints and the verification that names the position of a tampered entry.

The offline verifier (`python -m services.audit.verify`) imports only this module, so an auditor
checks an export with the same code the service uses, without the database or the broker.

Entry `n` (positions count from 0):
    canonical = canonical(event)                          # the encoding below, nothing else
    hash_n    = SHA-256(bytes.fromhex(hash_{n-1}) || canonical), hash_{-1} = 32 zero bytes
    leaf_n    = SHA-256(0x00 || canonical)                # the RFC 9162 leaf of the Merkle tree
A checkpoint signs (Ed25519) the Merkle root and the chain hash over the first `size` entries.
"""
import base64
import hashlib
import json
from datetime import date, datetime
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pymerkle import BaseMerkleTree, InvalidProof, MerkleProof

GENESIS = "00" * 32
LOG_ID = "ipv-audit-ledger"


def _plain(value):
    if isinstance(value, datetime):
        raise TypeError("datetimes are kept as their ISO strings in events")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no canonical encoding")


def canonical(obj):
    """JSON, keys sorted, no spaces, UTF-8 (not \\u escapes), dates as YYYY-MM-DD, UUIDs as text.
    Floats never occur: money is integer fen."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_plain, allow_nan=False).encode("utf-8")


def plain(obj):
    """The JSON-only form of an event (what the ledger stores): its canonical encoding, decoded."""
    return json.loads(canonical(obj))


def chain_hash(prev_hash_hex, encoded):
    return hashlib.sha256(bytes.fromhex(prev_hash_hex) + encoded).hexdigest()


def leaf_hash(encoded):
    return hashlib.sha256(b"\x00" + encoded).digest()


# -- the Merkle tree -------------------------------------------------------------------------
class LeafTree(BaseMerkleTree):
    """pymerkle's RFC 9162 tree over leaf hashes held by the caller: the service loads them from
    the ledger, the verifier recomputes them from an export. Entries are appended as their
    canonical bytes; `from_leaves` takes digests already computed."""

    def __init__(self, leaves=()):
        self.leaves = list(leaves)
        super().__init__("sha256", disable_cache=True)

    @classmethod
    def from_leaves(cls, leaves):
        return cls(leaves)

    def _encode_entry(self, data):
        return data

    def _store_leaf(self, data, digest):
        self.leaves.append(digest)
        return len(self.leaves)

    def _get_leaf(self, index):
        return self.leaves[index - 1]

    def _get_leaves(self, offset, width):
        return self.leaves[offset:offset + width]

    def _get_size(self):
        return len(self.leaves)


def merkle_root(leaves):
    return LeafTree.from_leaves(leaves).get_root().hex() if leaves else hashlib.sha256(b"").hexdigest()


# -- signed checkpoints -----------------------------------------------------------------------
def checkpoint_body(size, root_hex, chain_hex, signed_at):
    """What a checkpoint's signature covers, as bytes."""
    return canonical({"log": LOG_ID, "size": size, "root_hash": root_hex, "chain_hash": chain_hex,
                      "signed_at": signed_at})


def load_private_key(pem_bytes):
    return serialization.load_pem_private_key(pem_bytes, password=None)


def new_private_key_pem():
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_pem(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(public_pem):
    key = serialization.load_pem_public_key(public_pem.encode())
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_checkpoint(private_key, size, root_hex, chain_hex, signed_at):
    signature = private_key.sign(checkpoint_body(size, root_hex, chain_hex, signed_at))
    return {"size": size, "root_hash": root_hex, "chain_hash": chain_hex, "signed_at": signed_at,
            "key_id": key_id(public_key_pem(private_key)), "signature": base64.b64encode(signature).decode()}


def checkpoint_signature_ok(checkpoint, public_pem):
    key = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        return False
    try:
        key.verify(base64.b64decode(checkpoint["signature"]),
                   checkpoint_body(checkpoint["size"], checkpoint["root_hash"], checkpoint["chain_hash"],
                                   checkpoint["signed_at"]))
        return True
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False


# -- proofs -------------------------------------------------------------------------------------
def inclusion_ok(event, position, proof, checkpoint):
    """Does `proof` show the entry holding `event` at `position` inside `checkpoint`'s tree?"""
    try:
        parsed = MerkleProof.deserialize(proof)
        parsed.verify(leaf_hash(canonical(event)), bytes.fromhex(checkpoint["root_hash"]),
                      index=position + 1, size=checkpoint["size"], algorithm="sha256")
        return True
    except (InvalidProof, ValueError, AttributeError, TypeError):
        return False


def consistency_ok(older, newer, proof):
    """Does `proof` show `newer`'s tree extends `older`'s (nothing before older.size changed)?"""
    try:
        parsed = MerkleProof.deserialize(proof)
        if older["size"] == newer["size"]:
            return older["root_hash"] == newer["root_hash"]
        parsed.verify(bytes.fromhex(older["root_hash"]), bytes.fromhex(newer["root_hash"]),
                      prior_size=older["size"], later_size=newer["size"], algorithm="sha256")
        return True
    except (InvalidProof, ValueError, AttributeError, TypeError):
        return False


# -- verification ---------------------------------------------------------------------------------
def verify(entries, checkpoints=(), public_pem=None, head_size=None, head_hash=None, after=None):
    """Checks entries (dicts with position, event, prev_hash, hash; in stored position order)
    against themselves, the signed checkpoints and the head. Returns (leaves, problems): each
    problem is {kind, position, detail}, kind one of modified, deleted, inserted, reordered,
    broken_link, checkpoint (root or signature wrong) — the others name the position of an entry.
    A broken link has two sides, both named: an entry whose content was changed and its own hash
    recomputed is `modified`, and the next one, still chained to the old hash, `broken_link`.
    `after` = (size, chain hash) of a checkpoint already verified: the entries then start at
    position `size`, chained from that hash (the checkpoints given must lie within them)."""
    start_position, start_hash = after or (0, GENESIS)
    problems = {}

    def report(kind, position, detail):
        problems.setdefault((position, kind), {"kind": kind, "position": position, "detail": detail})

    by_hash = {}
    referenced = set()
    leaves = []
    for index, entry in enumerate(entries):
        by_hash.setdefault(entry["hash"], index)
        referenced.add(entry["prev_hash"])
    expected_position = start_position
    inserted = set()
    for index, entry in enumerate(entries):
        position = entry["position"]
        encoded = canonical(entry["event"])
        leaves.append(leaf_hash(encoded))
        if position > expected_position:
            for missing in range(expected_position, position):
                report("deleted", missing, f"no entry at position {missing}")
        expected_position = position + 1
        if chain_hash(entry["prev_hash"], encoded) != entry["hash"]:
            report("modified", position, "the entry's content no longer matches its hash")
        before = entries[index - 1] if index else None
        if entry["prev_hash"] == (before["hash"] if before else start_hash):
            continue
        source = by_hash.get(entry["prev_hash"])
        if source is None and entry["prev_hash"] != start_hash:
            if (position - 1, "deleted") not in problems:
                report("broken_link", position, f"chained to a hash no entry has: the entry before it (position "
                                                f"{position - 1}) was rewritten, or one after that was removed")
                if before is not None:
                    report("modified", before["position"], f"position {position} was chained to another hash of "
                                                           "this entry: its content and hash were rewritten (or the "
                                                           "entries after it removed and renumbered)")
        elif (before is not None and before["hash"] not in referenced and index >= 2
              and source == index - 2):
            inserted.add(before["position"])
            report("inserted", before["position"], "no later entry follows this one; the chain skips it")
        elif source is None or (entries[source]["position"], "reordered") not in problems:
            # An entry whose own predecessor was moved is in place: only the moved ones are named.
            origin = entries[source]["position"] if source is not None else "the start"
            report("reordered", position, f"this entry followed position {origin} when it was appended")
    if head_hash is not None and entries and expected_position == head_size and entries[-1]["hash"] != head_hash:
        last = entries[-1]["position"]
        report("modified", last, "the head was chained to another hash of this entry: its content and hash "
                                 "were rewritten")
    if head_size is not None and expected_position < head_size:
        for missing in range(expected_position, head_size):
            report("deleted", missing, f"the head counts {head_size} entries; position {missing} is gone")
    for position in inserted:  # an inserted entry's own hash check adds nothing
        problems.pop((position, "modified"), None)
    for cp in checkpoints:
        if public_pem is not None and not checkpoint_signature_ok(cp, public_pem):
            report("checkpoint", cp["size"], f"checkpoint at size {cp['size']}: signature does not verify")
            continue
        if cp["size"] > len(leaves):
            report("checkpoint", cp["size"], f"checkpoint at size {cp['size']}: only {len(leaves)} entries remain")
            continue
        if merkle_root(leaves[:cp["size"]]) != cp["root_hash"]:
            report("checkpoint", cp["size"], f"checkpoint at size {cp['size']}: Merkle root differs")
        if cp["size"] and entries[cp["size"] - 1]["hash"] != cp["chain_hash"]:
            report("checkpoint", cp["size"], f"checkpoint at size {cp['size']}: chain hash differs")
    ordered = sorted(problems.values(), key=lambda p: (p["position"], p["kind"]))
    return leaves, ordered
