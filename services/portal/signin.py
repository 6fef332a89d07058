"""Who is asking: the signed-in person (Keycloak, authorization code + PKCE with the public client
`ipv-portal`, tokens kept in the server-side session) or, on signed-out pages, the read-only reader
account (client credentials of a confidential client whose service account holds the auditor role).

Every page that needs a person is wrapped in `person_required(role)`; it puts the person's access token
in `g.api_token`, refreshing it when it is about to expire, so the API decides what the person may see
exactly as it would for any other client. There is no other way in."""
import threading
import time
from functools import wraps

import jwt
import requests
from authlib.integrations.flask_client import OAuth
from flask import abort, current_app, g, redirect, request, session, url_for

ROLES = ("enterprise", "agency", "officer", "auditor", "ops")
REFRESH_MARGIN_S = 30

oauth = OAuth()


def init_app(app):
    oauth.init_app(app)
    issuer = app.config["OIDC_ISSUER"]
    if issuer:
        oauth.register("keycloak", client_id=app.config["CLIENT_ID"],
                       server_metadata_url=f"{issuer.rstrip('/')}/.well-known/openid-configuration",
                       client_kwargs={"scope": "openid", "code_challenge_method": "S256"})
    app.extensions["ipv_reader"] = ReaderToken(app.config)
    app.extensions["ipv_jwks"] = jwt.PyJWKClient(f"{issuer.rstrip('/')}/protocol/openid-connect/certs",
                                                 cache_keys=True, lifespan=300) if issuer else None


def keycloak():
    client = oauth.create_client("keycloak")
    if client is None:
        abort(503, description="sign-in is not configured (OIDC_ISSUER is empty)")
    return client


def claims_of(access_token):
    """The access token's claims, checked like the services check them (signature by the realm's JWKS,
    issuer, audience, expiry): the portal shows what the token says, so it must be the realm's."""
    config = current_app.config
    key = current_app.extensions["ipv_jwks"].get_signing_key_from_jwt(access_token)
    return jwt.decode(access_token, key.key, algorithms=["RS256", "ES256", "EdDSA"], issuer=config["OIDC_ISSUER"],
                      audience=config["OIDC_AUDIENCE"], options={"require": ["exp", "iss"]})


def person_from(claims):
    roles = [r for r in claims.get("realm_access", {}).get("roles", []) if r in ROLES]
    return {"role": roles[0] if roles else None, "org": claims.get("org"), "claimed": claims.get("credit_code"),
            "username": claims.get("preferred_username") or claims.get("sub"),
            "name": claims.get("name") or claims.get("preferred_username") or ""}


def start_session(token):
    claims = claims_of(token["access_token"])
    session.clear()
    session.regenerate()
    session["person"] = person_from(claims)
    session["tokens"] = {"access_token": token["access_token"], "refresh_token": token.get("refresh_token"),
                         "id_token": token.get("id_token"), "expires_at": int(claims["exp"])}
    return session["person"]


def current_person():
    return session.get("person")


def _fresh_access_token():
    tokens = session.get("tokens")
    if not tokens:
        return None
    if tokens["expires_at"] - REFRESH_MARGIN_S > time.time():
        return tokens["access_token"]
    if not tokens.get("refresh_token"):
        return None
    try:
        token = keycloak().fetch_access_token(grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        claims = claims_of(token["access_token"])
    except Exception:  # the realm ended the session (idle, revoked, signed out elsewhere): sign in again
        current_app.logger.info("refresh refused; the person signs in again")
        return None
    session["tokens"] = dict(tokens, access_token=token["access_token"],
                             refresh_token=token.get("refresh_token", tokens["refresh_token"]),
                             expires_at=int(claims["exp"]))
    return token["access_token"]


def person_required(*roles):
    """A page for a signed-in person of one of `roles`; others get the portal's 403 page."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            person = current_person()
            token = _fresh_access_token() if person else None
            if not token:
                ended = bool(person) or session.timed_out
                session.clear()
                return redirect(url_for("account.sign_in", next=request.full_path.rstrip("?"),
                                        ended="1" if ended else None))
            if person["role"] not in roles:
                abort(403)
            g.person = person
            g.api_token = token
            return view(*args, **kwargs)
        return wrapper
    return decorate


def as_reader(view):
    """A signed-out page: the API is read with the reader account's token, never the visitor's."""
    @wraps(view)
    def wrapper(*args, **kwargs):
        g.api_token = current_app.extensions["ipv_reader"].token()
        return view(*args, **kwargs)
    return wrapper


class ReaderToken:
    """Client-credentials token of the read-only reader account, shared by the threads of a worker and
    renewed shortly before it expires."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.Lock()
        self.value, self.expires = None, 0.0

    def token_url(self):
        return f"{self.config['OIDC_ISSUER'].rstrip('/')}/protocol/openid-connect/token"

    def token(self):
        if not (self.config["OIDC_ISSUER"] and self.config["READER_CLIENT_ID"]):
            abort(503, description="the public pages' reader account is not configured (PORTAL_READER_CLIENT_ID)")
        with self.lock:
            if self.value and self.expires - REFRESH_MARGIN_S > time.time():
                return self.value
            answer = requests.post(self.token_url(), timeout=10, data={
                "grant_type": "client_credentials", "client_id": self.config["READER_CLIENT_ID"],
                "client_secret": self.config["READER_CLIENT_SECRET"]})
            if answer.status_code != 200:
                current_app.logger.error("reader token refused: %s %s", answer.status_code, answer.text[:200])
                abort(503, description="the reader account was refused a token")
            body = answer.json()
            self.value, self.expires = body["access_token"], time.time() + body.get("expires_in", 60)
            return self.value
