"""What a service stores is what it reads back, byte for byte in BSON, through the store's own decoder:
the patched FerretDB decodes stored documents in one pass (the patch's ninth fix) and hands anything
unusual to FerretDB's general decoder. Documents of every type the services write, nested, with
keys and strings that JSON must escape, are inserted, read back, and changed by a guarded update."""
import datetime
import random
import uuid

import bson
import pytest
from bson import Binary, Int64, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

pytestmark = pytest.mark.integration

# Characters JSON escapes (quote, backslash, controls, and what Go escapes for HTML: < > & U+2028),
# and what it does not (accents, CJK, astral emoji, a combining mark).
ALPHABET = ['a', 'Z', '0', ' ', '"', '\\', '/', '<', '>', '&', '\u2028', '\u2029', '\x01', '\t', '\n', 'é', 'e\u0301',
            '中', '文', '券', '😀', '\u00a0', '\ufeff']
RAW = CodecOptions(document_class=RawBSONDocument)


def text(rng, longest=10):
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, longest)))


def key(rng):
    k = text(rng, 6).replace(".", "")
    return k if k and not k.startswith("$") else "k" + k


def scalar(rng):
    return rng.choice([
        lambda: text(rng),
        lambda: rng.choice([0, -1, 1, 2**31 - 1, -2**31, rng.randint(-2**31, 2**31 - 1)]),
        lambda: Int64(rng.choice([0, -1, 2**63 - 1, -2**63, 2**53 + 1, rng.randint(-2**63, 2**63 - 1)])),
        lambda: rng.choice([0.0, 1.5, -2.25e-300, 1e300, 5e-324, 0.1, rng.uniform(-1e9, 1e9)]),
        lambda: rng.random() < 0.5,
        lambda: None,
        lambda: datetime.datetime(2026, 12, 3, 18, 0, tzinfo=datetime.timezone.utc)
        + datetime.timedelta(milliseconds=rng.randint(-10**12, 10**12)),
        lambda: Binary(text(rng).encode(), rng.choice([0, 5])),
        lambda: ObjectId(),
        lambda: Regex(text(rng, 4).replace("\\", ""), "i"),
        lambda: Timestamp(rng.randint(1, 2**31), rng.randint(0, 1000)),
    ])()


def value(rng, depth):
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return document(rng, depth + 1)
    if depth < 3 and roll < 0.3:  # FerretDB 1.24 stores no array inside an array
        return [rng.choice([scalar(rng), document(rng, depth + 1)]) for _ in range(rng.randint(0, 4))]
    return scalar(rng)


def document(rng, depth):
    return {key(rng): value(rng, depth) for _ in range(rng.randint(0, 6))}


@pytest.fixture
def collection(mongo_uri):
    name = f"test_{uuid.uuid4().hex[:12]}"
    client = MongoClient(mongo_uri, tz_aware=True)
    yield client[name].get_collection("docs", codec_options=RAW)
    client.drop_database(name)


def stored(collection, doc_id):
    return bytes(collection.find_one({"_id": doc_id}).raw)


def test_every_type_nested_and_escaped_reads_back_byte_for_byte(collection):
    rng = random.Random(20261203)
    docs = [dict({"_id": f"d{n:03d}", "n": 0}, **document(rng, 0)) for n in range(300)]
    collection.insert_many([RawBSONDocument(bson.encode(d)) for d in docs])
    for doc in docs:
        assert stored(collection, doc["_id"]) == bson.encode(doc), doc


def test_a_guarded_update_rewrites_the_document_it_read_exactly(collection):
    rng = random.Random(3)
    docs = [dict({"_id": f"d{n:03d}", "n": 0}, **document(rng, 0)) for n in range(100)]
    collection.insert_many([RawBSONDocument(bson.encode(d)) for d in docs])
    for doc in docs:
        change = {"nested": document(rng, 1), "tag": text(rng)}  # new fields land in name order, as in MongoDB
        assert collection.update_one({"_id": doc["_id"], "n": 0}, {"$set": change, "$inc": {"n": 1}}).modified_count == 1
        assert stored(collection, doc["_id"]) == bson.encode(dict(doc, n=1, **change)), doc
