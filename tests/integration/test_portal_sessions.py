"""The portal's server-side sessions on the real database: the browser holds only a signed id, a session
idle longer than the realm's idle timeout is gone, a tampered cookie is no session, sign-in renews the id."""
import uuid
from datetime import timedelta

import pytest
from pymongo import MongoClient

from services.portal.app import create_app
from services.portal.sessions import COOKIE, utcnow


@pytest.fixture
def app(mongo_uri):
    db = f"test_portal_{uuid.uuid4().hex[:8]}"
    app = create_app(MONGO_URI=mongo_uri, MONGO_DB=db, SECRET_KEY="test-key", IDLE_TIMEOUT_S=1800, OIDC_ISSUER="")

    @app.route("/test/put")
    def put():
        from flask import session
        session["person"] = {"role": "enterprise", "org": "91350100M000100Y43"}
        return "ok"

    @app.route("/test/renew")
    def renew():
        from flask import session
        session.regenerate()
        return "ok"

    @app.route("/test/get")
    def get():
        from flask import session
        return {"person": session.get("person"), "timed_out": session.timed_out}
    yield app
    MongoClient(mongo_uri).drop_database(db)


def session_id(client):
    return client.get_cookie(COOKIE).value


def test_the_cookie_holds_only_a_signed_id_and_the_data_stays_on_the_server(app):
    client = app.test_client()
    client.get("/test/put")
    cookie = client.get_cookie(COOKIE)
    assert cookie.http_only and cookie.same_site == "Lax"
    assert "enterprise" not in cookie.value and "91350100M000100Y43" not in cookie.value
    assert client.get("/test/get").json["person"]["org"] == "91350100M000100Y43"


def test_a_session_idle_past_the_timeout_is_gone(app):
    client = app.test_client()
    client.get("/test/put")
    sid = session_id(client).rsplit(".", 1)[0]
    store = app.session_interface.store
    store.collection.update_one({"_id": sid}, {"$set": {"last_seen": utcnow() - timedelta(seconds=1801)}})
    answer = client.get("/test/get").json
    assert answer == {"person": None, "timed_out": True}
    assert store.load(sid) is None


def test_a_tampered_cookie_is_no_session(app):
    client = app.test_client()
    client.get("/test/put")
    sid, signature = session_id(client).rsplit(".", 1)
    # Change the signature's first character: every bit of it counts. The last ones may only carry base64
    # padding bits, so rewriting them can leave the signature valid (this test once failed that way).
    first = "B" if signature[0] == "A" else "A"
    client.set_cookie(COOKIE, f"{sid}.{first}{signature[1:]}")
    assert client.get("/test/get").json["person"] is None


def test_sign_in_renews_the_id_and_the_old_one_is_worth_nothing(app):
    client = app.test_client()
    client.get("/test/put")
    before = session_id(client)
    client.get("/test/renew")
    after = session_id(client)
    assert after != before
    assert client.get("/test/get").json["person"]["role"] == "enterprise"
    client.set_cookie(COOKIE, before)
    assert client.get("/test/get").json["person"] is None
