"""Server-side sessions: the browser holds only a signed, random session id (HttpOnly, SameSite=Lax);
the person's tokens, the OIDC state and the CSRF secret stay in the portal's own database, so any
worker or pod can serve the next request and nothing a script in the page could read carries a token.

A session unused for longer than the idle timeout is gone (the realm's SSO Session Idle, so the portal
never keeps someone signed in whom Keycloak would have signed out)."""
import json
import secrets
from datetime import datetime, timedelta, timezone

from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, Signer
from pymongo import MongoClient
from werkzeug.datastructures import CallbackDict

COOKIE = "ipv_session"
# last_seen is written at most this often when nothing else changed, so a page view is not always a write.
TOUCH_EVERY = timedelta(seconds=60)


def utcnow():
    return datetime.now(timezone.utc)


class Session(CallbackDict, SessionMixin):
    def __init__(self, data=None, sid=None, last_seen=None, timed_out=False):
        def changed(_):
            self.modified = True
        super().__init__(data or {}, changed)
        self.sid = sid
        self.last_seen = last_seen
        self.timed_out = timed_out  # the request came with a session that idled out
        self.modified = False
        self.renew = False

    def regenerate(self):
        """A new id for the same data: called at sign-in so an id planted before it is worth nothing."""
        self.renew = True
        self.modified = True


class SessionStore:
    def __init__(self, mongo_uri, db_name):
        self.collection = MongoClient(mongo_uri, tz_aware=True, serverSelectionTimeoutMS=5000)[db_name]["sessions"]

    def load(self, sid):
        return self.collection.find_one({"_id": sid})

    def save(self, sid, data, now):
        # As one JSON string: Flask's flashes are nested lists, which FerretDB does not store.
        self.collection.replace_one({"_id": sid}, {"_id": sid, "data": json.dumps(data), "last_seen": now}, upsert=True)

    def touch(self, sid, now):
        self.collection.update_one({"_id": sid}, {"$set": {"last_seen": now}})

    def delete(self, sid):
        self.collection.delete_one({"_id": sid})

    def purge_idle(self, before):
        """No TTL index (FerretDB has none): sign-ins sweep what idled out."""
        self.collection.delete_many({"last_seen": {"$lt": before}})


class ServerSideSessions(SessionInterface):
    def __init__(self, store, idle_timeout_s):
        self.store = store
        self.idle = timedelta(seconds=idle_timeout_s)

    def _signer(self, app):
        return Signer(app.secret_key, salt="ipv-portal-session")

    def open_session(self, app, request):
        raw = request.cookies.get(COOKIE)
        if not raw:
            return Session()
        try:
            sid = self._signer(app).unsign(raw).decode()
        except BadSignature:
            return Session()
        doc = self.store.load(sid)
        if doc is None:
            return Session()
        if utcnow() - doc["last_seen"] > self.idle:
            self.store.delete(sid)
            return Session(timed_out=True)
        return Session(json.loads(doc["data"]), sid=sid, last_seen=doc["last_seen"])

    def save_session(self, app, session, response):
        secure = app.config["PREFERRED_URL_SCHEME"] == "https"
        now = utcnow()
        if not session:
            if session.sid:
                self.store.delete(session.sid)
                response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=secure)
            return
        if session.renew and session.sid:
            self.store.delete(session.sid)
            session.sid = None
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
            self.store.purge_idle(now - self.idle)
            session.modified = True
        if session.modified:
            self.store.save(session.sid, dict(session), now)
        elif session.last_seen is None or now - session.last_seen > TOUCH_EVERY:
            self.store.touch(session.sid, now)
        else:
            return
        response.set_cookie(COOKIE, self._signer(app).sign(session.sid).decode(), httponly=True, samesite="Lax",
                            secure=secure, path="/")
        response.vary.add("Cookie")
