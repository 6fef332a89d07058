"""The money path rests on one promise of the database: a single-document update guarded by its filter
is atomic. MongoDB keeps it; FerretDB 1.24 on SQLite does not unless built with
scripts/ferretdb-v1.24.2.patch (its update reads and writes back without isolation, #3040)."""
import threading
import uuid

import pytest
from pymongo import MongoClient, ReturnDocument

pytestmark = pytest.mark.integration

WRITERS = 16


def race(mongo_uri, db, write):
    """Runs `write(collection)` from WRITERS clients released at once; returns how many reported success."""
    wins, barrier = [], threading.Barrier(WRITERS)

    def writer():
        collection = MongoClient(mongo_uri)[db].balances
        barrier.wait()
        if write(collection):
            wins.append(1)
    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return len(wins)


@pytest.fixture
def db(mongo_uri):
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield name
    MongoClient(mongo_uri).drop_database(name)


@pytest.mark.parametrize("trial", range(5))
def test_concurrent_guarded_decrements_never_lose_or_overspend(mongo_uri, db, trial):
    # 16 writers each take 100 from a balance of 1000: exactly 10 may succeed and the balance must
    # account for every success.
    MongoClient(mongo_uri)[db].balances.insert_one({"_id": "v", "balance": 1000})
    wins = race(mongo_uri, db, lambda c: c.update_one(
        {"_id": "v", "balance": {"$gte": 100}}, {"$inc": {"balance": -100}}).modified_count == 1)
    balance = MongoClient(mongo_uri)[db].balances.find_one({"_id": "v"})["balance"]
    assert (wins, balance) == (10, 0)


@pytest.mark.parametrize("trial", range(5))
def test_a_compare_and_set_has_exactly_one_winner(mongo_uri, db, trial):
    MongoClient(mongo_uri)[db].balances.insert_one({"_id": "v", "seq": 1, "owner": None})
    wins = race(mongo_uri, db, lambda c: c.find_one_and_update(
        {"_id": "v", "seq": 1}, {"$set": {"seq": 2, "owner": uuid.uuid4().hex}},
        return_document=ReturnDocument.AFTER) is not None)
    assert wins == 1
    assert MongoClient(mongo_uri)[db].balances.find_one({"_id": "v"})["seq"] == 2
