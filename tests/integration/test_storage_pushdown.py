"""FerretDB as built with scripts/ferretdb-v1.24.2.patch lets SQLite pick the documents a filter may
match (a field equal to a string, a field compared to a number) instead of decoding every document of
the collection. What a find answers must not change: the oracle is the same filter wrapped in `$and`,
which the patch never pushes down, so FerretDB evaluates it on every document as before. On MongoDB
both are the server's own answer."""
import datetime
import random
import uuid

import pytest
from bson.int64 import Int64
from pymongo import MongoClient

pytestmark = pytest.mark.integration

# Values of every shape a pushed-down condition could mistake: arrays (flat and nested), objects holding
# the value, numbers of each BSON type and at the edges, strings that look like numbers, dates, booleans,
# null, missing, odd Unicode.
# (FerretDB stores no infinity, no nested array and no key starting with `$`; it drops the connection
# on a NaN.)
SHAPES = ["a", "b", "A", "", "a<b", ["a<b"], 0, 0.0, Int64(0), [0], "0", "1", "5", "é", "e\u0301", "中文", "a\u0000b", 1, 5, 5.0, -3, 2.5, -0.0, Int64(2**62),
          Int64(-2**62), Int64(2**53 + 1), 1e300, True, False, None, ["a", "b"], ["b"], ["a", 5], [1, 7], [],
          [{"x": "a"}], {"x": "a"}, {"x": 5}, datetime.datetime(2026, 1, 1), "NaN"]
FIELDS = ("f", "g")


@pytest.fixture(params=["unindexed", "indexed"])
def collection(request, mongo_uri):
    # Indexed: a string equality is found through the field's index (the patch's fifth fix), unindexed
    # by a scan in SQLite (the fourth).
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = MongoClient(mongo_uri)
    if request.param == "indexed":
        client[name].docs.create_index("f")
        client[name].docs.create_index([("g", 1), ("f", 1)])
    rng = random.Random(20261202)
    docs = []
    for n in range(300):
        doc = {"_id": f"d{n:04d}"}
        for field in FIELDS:
            if rng.random() < 0.85:
                doc[field] = rng.choice(SHAPES)
        docs.append(doc)
    client[name].docs.insert_many(docs)
    yield client[name].docs
    client.drop_database(name)


FILTERS = [{"f": value} for value in ("a", "b", "", "1", "5", "é", "中文", "a\u0000b", "NaN", "missing", "a<b")] + [
    {"f": {op: value}} for op in ("$gt", "$gte", "$lt", "$lte")
    for value in (0, 1, 5, 5.0, -3, 2.5, -0.0, Int64(2**62), Int64(2**53), 2.0**53, 1e300, float("inf"), float("-inf"))] + [
    {"f": {op: value}} for op in ("$gt", "$lte") for value in ("b", "", datetime.datetime(2026, 1, 1), None, True, False)] + [
    {"f": {"$gte": None}}, {"f": {"$lt": "中"}},
    {"f": "a", "g": "b"},
    {"f": "a", "g": {"$gt": 1}},
    {"f": {"$gt": 1, "$lt": 7}},
    {"f": {"$gte": 1, "$ne": 5}},
    {"f": {"$gt": 1}, "g": {"$lte": 5}},
    {"f": "a", "$or": [{"g": "b"}, {"g": 5}]},
    {"f": {"$in": ["a", "b"]}},
    {"f": {"x": "a"}},
    {"f.x": "a"},
    {"_id": "d0007", "f": "a"},
]


@pytest.mark.parametrize("query", FILTERS, ids=repr)
def test_a_filter_finds_the_same_documents_whether_sqlite_or_ferretdb_evaluates_it(collection, query):
    pushed = sorted(d["_id"] for d in collection.find(query, {"_id": 1}))
    evaluated = sorted(d["_id"] for d in collection.find({"$and": [query]}, {"_id": 1}))
    assert pushed == evaluated
    assert collection.count_documents(query) == len(evaluated)


def test_guarded_updates_and_deletes_by_a_field_change_exactly_the_matching_documents(collection):
    expected = collection.count_documents({"$and": [{"f": "a"}]})
    assert collection.update_many({"f": "a"}, {"$set": {"touched": True}}).modified_count == expected
    assert collection.count_documents({"$and": [{"touched": True}]}) == expected
    assert collection.delete_many({"f": {"$gt": 1}}).deleted_count > 0
    assert collection.count_documents({"$and": [{"f": {"$gt": 1}}]}) == 0


def test_a_filter_on_a_field_is_left_to_sqlite(mongo_uri, collection):
    db = MongoClient(mongo_uri)[collection.database.name]
    for query in ({"f": "a"}, {"f": {"$gt": 0}}, {"status": "live", "orders": {"$gte": 2}}):
        plan = db.command("explain", {"find": "docs", "filter": query})
        if "filterPushdown" not in plan:
            pytest.skip("MongoDB: the server plans with its own indexes")
        assert plan["filterPushdown"] is True, query
    plan = db.command("explain", {"find": "docs", "filter": {"$and": [{"f": "a"}]}})
    assert plan["filterPushdown"] is False


def test_an_indexed_field_is_searched_in_its_index_where_that_is_exact(mongo_uri, collection):
    db = MongoClient(mongo_uri)[collection.database.name]
    plan = db.command("explain", {"find": "docs", "filter": {"f": "a"}})
    if "filterPushdown" not in plan:
        pytest.skip("MongoDB: the server plans with its own indexes")
    indexed = "f_1" in collection.index_information()

    def plan(query):
        """SQLite's plan of the query, and whether it scans the table (json_each's scan of one document's
        array is not one)."""
        steps = str(db.command("explain", {"find": "docs", "filter": query})["queryPlanner"])
        return steps, "SCAN" in steps.replace("SCAN json_each", "")
    # a string: the index, for the string and for arrays; above zero: the index, around the zeros
    for query in ({"f": "a"}, {"f": {"$gt": 0}}, {"f": {"$gte": 1}}):
        steps, table_scanned = plan(query)
        assert ("MULTI-INDEX OR" in steps and not table_scanned) if indexed else table_scanned, (query, steps)
    # a comparison with a value needs the field (0 or less too): the index finds the documents that have it
    for query in ({"f": {"$lte": datetime.datetime(2026, 1, 1)}}, {"f": {"$gt": -1}}, {"f": {"$lt": "b"}}):
        steps, table_scanned = plan(query)
        assert ("USING INDEX" in steps and not table_scanned) if indexed else table_scanned, (query, steps)
    steps, table_scanned = plan({"f": {"$lte": None}})
    assert table_scanned, steps   # null matches a missing field: no shortcut
