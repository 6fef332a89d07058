"""The money path rests on one promise of the database: a single-document update guarded by its filter
is atomic. MongoDB keeps it; FerretDB 1.24 on SQLite does not unless built with
scripts/ferretdb-v1.24.2.patch (its update reads and writes back without isolation, #3040). The patch
locks one document where the filter pins `_id` and the whole collection where it does not, and looks a
guarded filter up by its `_id` index instead of scanning the collection."""
import threading
import uuid

import pytest
from pymongo import MongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

pytestmark = pytest.mark.integration

WRITERS = 16


def race(mongo_uri, db, write):
    """Runs `write(collection, writer_no)` from WRITERS clients released at once; returns what each returned."""
    results, barrier = [], threading.Barrier(WRITERS)

    def writer(n):
        collection = MongoClient(mongo_uri)[db].balances
        barrier.wait()
        results.append(write(collection, n))
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results


@pytest.fixture
def db(mongo_uri):
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    MongoClient(mongo_uri, socketTimeoutMS=60_000).drop_database(name)  # a stuck server fails, not hangs


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_guarded_decrements_never_lose_or_overspend(mongo_uri, db, trial):
    # 16 writers each take 100 from a balance of 1000: exactly 10 may succeed and the balance must
    # account for every success.
    MongoClient(mongo_uri)[db].balances.insert_one({"_id": "v", "balance": 1000})
    wins = sum(race(mongo_uri, db, lambda c, _: c.update_one(
        {"_id": "v", "balance": {"$gte": 100}}, {"$inc": {"balance": -100}}).modified_count == 1))
    balance = MongoClient(mongo_uri)[db].balances.find_one({"_id": "v"})["balance"]
    assert (wins, balance) == (10, 0)


@pytest.mark.parametrize("trial", range(5))
def test_a_compare_and_set_has_exactly_one_winner(mongo_uri, db, trial):
    MongoClient(mongo_uri)[db].balances.insert_one({"_id": "v", "seq": 1, "owner": None})
    wins = sum(race(mongo_uri, db, lambda c, _: c.find_one_and_update(
        {"_id": "v", "seq": 1}, {"$set": {"seq": 2, "owner": uuid.uuid4().hex}},
        return_document=ReturnDocument.AFTER) is not None))
    assert wins == 1
    assert MongoClient(mongo_uri)[db].balances.find_one({"_id": "v"})["seq"] == 2


def test_a_guarded_filter_on_id_is_looked_up_by_its_index(mongo_uri, db):
    # Every money write is `{_id, guard}`: the store must find the document by its `_id` index, not
    # scan the collection, or each write costs as much as the collection is large.
    balances = MongoClient(mongo_uri)[db].balances
    balances.insert_many([{"_id": f"v{i}", "balance": 1000} for i in range(50)])
    plan = MongoClient(mongo_uri)[db].command(
        "explain", {"find": "balances", "filter": {"_id": "v7", "balance": {"$gte": 100}}})
    if "filterPushdown" in plan:  # FerretDB: SQLite's own query plan
        steps = " ".join(plan["queryPlanner"]["Plan"])
        assert plan["filterPushdown"] is True
        assert "USING INDEX" in steps and "SCAN" not in steps, steps
    else:  # MongoDB
        assert "COLLSCAN" not in str(plan["queryPlanner"]["winningPlan"]), plan
    # the rest of the filter still applies
    assert balances.find_one({"_id": "v7", "balance": {"$gte": 2000}}) is None
    assert balances.update_one({"_id": "v7", "balance": {"$gte": 2000}}, {"$inc": {"balance": -1}}).modified_count == 0


DOCUMENTS, ROUNDS = 4, 12


@pytest.mark.parametrize("trial", range(2))
def test_writers_of_different_documents_and_of_the_whole_collection_lose_nothing(mongo_uri, db, trial):
    # Pinned writers take 100 at a time from four balances of 1000 (more tries than money), while
    # collection-wide writers stamp every document and take 100 from whichever still has it. Each
    # document must account for every write that reported success, whoever made it.
    coll = MongoClient(mongo_uri)[db].balances
    coll.insert_many([{"_id": f"v{i}", "kind": "v", "balance": 1000, "taken": 0, "sweeps": 0}
                      for i in range(DOCUMENTS)])
    sweeps = []

    def write(c, n):
        wins = 0
        for i in range(ROUNDS):
            if n % 4 == 0:  # no `_id` in the filter: the collection's lock
                c.update_many({"kind": "v"}, {"$inc": {"sweeps": 1}})
                sweeps.append(1)
                wins += c.find_one_and_update({"kind": "v", "balance": {"$gte": 100}},
                                              {"$inc": {"balance": -100, "taken": 1}}) is not None
            else:
                wins += c.update_one({"_id": f"v{(n + i) % DOCUMENTS}", "balance": {"$gte": 100}},
                                     {"$inc": {"balance": -100, "taken": 1}}).modified_count
        return wins
    wins = sum(race(mongo_uri, db, write))
    docs = list(coll.find())
    assert all(d["balance"] + 100 * d["taken"] == 1000 and d["sweeps"] == len(sweeps) for d in docs), docs
    assert sum(d["taken"] for d in docs) == wins


def test_writers_of_one_database_in_several_collections_all_finish_with_what_they_reported(mongo_uri, db):
    # The patch queues a database's writing transactions on one lock (fix 8). Inserts, updates, deletes
    # and refused duplicate inserts run at once across three collections: each must finish (a refused
    # write must let go of the lock) and leave exactly what it reported.
    MongoClient(mongo_uri)[db].counters.insert_many([{"_id": f"c{n}", "n": 0} for n in range(WRITERS)])
    MongoClient(mongo_uri)[db].other.insert_one({"_id": "shared", "n": 0})
    done, barrier = {}, threading.Barrier(WRITERS)

    def writer(n):
        base = MongoClient(mongo_uri, socketTimeoutMS=60_000)[db]
        barrier.wait()
        kept = duplicates = 0
        for i in range(ROUNDS):
            base.log.insert_one({"_id": f"w{n}-{i}"})
            try:
                base.log.insert_one({"_id": f"w{n}-{i}"})
            except DuplicateKeyError:
                duplicates += 1
            base.counters.update_one({"_id": f"c{n}"}, {"$inc": {"n": 1}})
            if i % 2:
                kept -= base.log.delete_one({"_id": f"w{n}-{i - 1}"}).deleted_count
            kept += 1
            base.other.update_one({"_id": "shared"}, {"$inc": {"n": 1}})
        done[n] = (kept, duplicates)
    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert len(done) == WRITERS, f"{WRITERS - len(done)} writers still waiting after 120 s: a write lock was not released"
    base = MongoClient(mongo_uri, socketTimeoutMS=60_000)[db]
    assert base.log.count_documents({}) == sum(kept for kept, _ in done.values())
    assert all(duplicates == ROUNDS for _, duplicates in done.values())
    assert {c["_id"]: c["n"] for c in base.counters.find()} == {f"c{n}": ROUNDS for n in range(WRITERS)}
    assert base.other.find_one({"_id": "shared"})["n"] == WRITERS * ROUNDS
