"""The ledger's hash chain, Merkle proofs, signatures and tamper detection, without I/O."""
import copy

import pytest

from services.audit import ledger


def chain(count):
    entries, prev = [], ledger.GENESIS
    for n in range(count):
        event = {"event_id": f"e{n}", "type": "voucher.issued", "data": {"face_value_fen": 1000 + n, "name": "测试"}}
        digest = ledger.chain_hash(prev, ledger.canonical(event))
        entries.append({"position": n, "event": event, "prev_hash": prev, "hash": digest})
        prev = digest
    return entries


def kinds(entries, **kw):
    return [(p["kind"], p["position"]) for p in ledger.verify(entries, **kw)[1]]


def test_canonical_encoding_is_sorted_compact_utf8_whatever_the_key_order():
    assert ledger.canonical({"b": 1, "a": "测"}) == '{"a":"测","b":1}'.encode("utf-8")
    assert ledger.canonical({"a": "测", "b": 1}) == ledger.canonical({"b": 1, "a": "测"})
    with pytest.raises(ValueError):
        ledger.canonical({"fen": float("nan")})


def test_an_untouched_chain_verifies():
    assert kinds(chain(6), head_size=6) == []


def test_a_modified_entry_is_named():
    entries = chain(6)
    entries[3]["event"]["data"]["face_value_fen"] += 1
    assert kinds(entries) == [("modified", 3)]


def rewrite(entry):
    """Changes an entry's content and recomputes its own hash, as an insider covering tracks would."""
    entry["event"]["data"]["face_value_fen"] += 1
    entry["hash"] = ledger.chain_hash(entry["prev_hash"], ledger.canonical(entry["event"]))


def test_a_rewritten_entry_with_its_hash_recomputed_is_named_and_so_is_the_link_it_broke():
    entries = chain(6)
    rewrite(entries[3])
    problems = ledger.verify(entries, head_size=6, head_hash=entries[5]["hash"])[1]
    assert [(p["kind"], p["position"]) for p in problems] == [("modified", 3), ("broken_link", 4)]
    assert "position 4" in problems[0]["detail"] and "position 3" in problems[1]["detail"]


def test_a_rewritten_last_entry_is_named_by_the_head():
    entries = chain(6)
    head_hash = entries[5]["hash"]
    rewrite(entries[5])
    assert kinds(entries) == []
    assert kinds(entries, head_size=6, head_hash=head_hash) == [("modified", 5)]


def test_entries_after_a_verified_checkpoint_are_checked_from_its_chain_hash():
    entries = chain(8)
    assert kinds(entries[5:], head_size=8, after=(5, entries[4]["hash"])) == []
    assert kinds(entries[5:], after=(5, ledger.GENESIS)) == [("broken_link", 5)]
    rewrite(entries[6])
    assert kinds(entries[5:], after=(5, entries[4]["hash"])) == [("modified", 6), ("broken_link", 7)]


def test_a_deleted_entry_is_named_with_or_without_renumbering():
    entries = chain(6)
    assert kinds(entries[:2] + entries[3:]) == [("deleted", 2)]
    renumbered = entries[:2] + [dict(e, position=e["position"] - 1) for e in entries[3:]]
    # The chain alone cannot tell this from a rewrite of entry 1: both sides of the link are named.
    assert kinds(renumbered) == [("modified", 1), ("broken_link", 2)]
    assert kinds(entries[:5], head_size=6) == [("deleted", 5)]        # the tail, caught by the head


def test_an_inserted_entry_is_named():
    entries = chain(6)
    forged_event = {"event_id": "forged", "type": "claim.paid", "data": {"amount_fen": 99}}
    forged = {"position": 3, "event": forged_event, "prev_hash": entries[2]["hash"],
              "hash": ledger.chain_hash(entries[2]["hash"], ledger.canonical(forged_event))}
    tampered = entries[:3] + [forged] + [dict(e, position=e["position"] + 1) for e in entries[3:]]
    assert kinds(tampered) == [("inserted", 3)]


def test_swapped_entries_are_named_as_reordered():
    entries = chain(6)
    swapped = copy.deepcopy(entries)
    swapped[2], swapped[3] = dict(entries[3], position=2), dict(entries[2], position=3)
    assert kinds(swapped) == [("reordered", 2), ("reordered", 3)]


def test_merkle_root_matches_rfc9162_and_proofs_verify_and_fail_when_altered():
    entries = chain(7)
    leaves = [ledger.leaf_hash(ledger.canonical(e["event"])) for e in entries]
    # RFC 9162 2.1.1: MTH of 2 leaves = SHA-256(0x01 || leaf0 || leaf1)
    import hashlib
    assert ledger.merkle_root(leaves[:2]) == hashlib.sha256(b"\x01" + leaves[0] + leaves[1]).hexdigest()
    key = ledger.load_private_key(ledger.new_private_key_pem())
    small = ledger.sign_checkpoint(key, 3, ledger.merkle_root(leaves[:3]), entries[2]["hash"], "2026-01-01T00:00:00.000Z")
    big = ledger.sign_checkpoint(key, 7, ledger.merkle_root(leaves), entries[6]["hash"], "2026-01-02T00:00:00.000Z")
    tree = ledger.LeafTree.from_leaves(leaves)
    proof = tree.prove_inclusion(5, 7).serialize()
    assert ledger.inclusion_ok(entries[4]["event"], 4, proof, big)
    assert not ledger.inclusion_ok(entries[3]["event"], 4, proof, big)            # another entry
    assert not ledger.inclusion_ok(dict(entries[4]["event"], type="x.y"), 4, proof, big)
    altered = dict(proof, path=[proof["path"][0]] + ["00" * 32] + proof["path"][2:])
    assert not ledger.inclusion_ok(entries[4]["event"], 4, altered, big)
    consistency = tree.prove_consistency(3, 7).serialize()
    assert ledger.consistency_ok(small, big, consistency)
    assert not ledger.consistency_ok(dict(small, root_hash="11" * 32), big, consistency)
    public = ledger.public_key_pem(key)
    assert ledger.checkpoint_signature_ok(big, public)
    assert not ledger.checkpoint_signature_ok(dict(big, size=6), public)
    other = ledger.public_key_pem(ledger.load_private_key(ledger.new_private_key_pem()))
    assert not ledger.checkpoint_signature_ok(big, other)


def test_a_rechained_rewrite_is_caught_by_the_signed_checkpoint():
    entries = chain(5)
    leaves = [ledger.leaf_hash(ledger.canonical(e["event"])) for e in entries]
    key = ledger.load_private_key(ledger.new_private_key_pem())
    checkpoint = ledger.sign_checkpoint(key, 5, ledger.merkle_root(leaves), entries[4]["hash"], "2026-01-01T00:00:00.000Z")
    rewritten, prev = copy.deepcopy(entries), ledger.GENESIS
    rewritten[1]["event"]["data"]["face_value_fen"] = 1
    for e in rewritten:  # the forger recomputes every hash: the chain alone looks fine
        e["prev_hash"], e["hash"] = prev, ledger.chain_hash(prev, ledger.canonical(e["event"]))
        prev = e["hash"]
    assert kinds(rewritten) == []
    assert kinds(rewritten, checkpoints=[checkpoint], public_pem=ledger.public_key_pem(key)) == [("checkpoint", 5)]
