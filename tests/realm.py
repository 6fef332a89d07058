"""Real tokens from the Keycloak realm `ipv` that `make test` started, for the tests of sign-in, the
authorization matrix and the fuzz tests: a user per (role, subject) (the demo users where they fit, else
made once through the admin API), signed in by the password grant with a TOTP code for staff."""
import base64
import hashlib
import html
import os
import re
import secrets
import urllib.parse
import uuid

import requests

from cryptography.hazmat.primitives import serialization

from scripts.keycloak import REALM, Keycloak, Tokens
from tests.issuer import new_key, sign


class Realm:
    def __init__(self):
        self.kc = Keycloak()
        self.tokens = Tokens(self.kc)
        self.issuer = os.environ.get("OIDC_ISSUER") or f"{self.kc.url}/realms/{REALM}"

    @property
    def config(self):
        return {"OIDC_ISSUER": self.issuer, "OIDC_AUDIENCE": "ipv-api"}

    def token(self, role, subject):
        return self.tokens(role, subject)

    def header(self, role, subject):
        return {"Authorization": f"Bearer {self.token(role, subject)}"}

    def realm_id(self):
        return self.kc.admin("GET", f"/{REALM}")[1]["id"]

    def add_rsa_key(self, active, priority):
        """A signing key of ours added to the realm (as a rotation does): Keycloak publishes it in the
        JWKS, and signs with it when it is active and has the highest priority. Returns (key, kid,
        component id)."""
        key = new_key("RS256")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
        name = f"test-rsa-{uuid.uuid4().hex[:8]}"
        self.kc.admin("POST", f"/{REALM}/components", {
            "name": name, "providerId": "rsa", "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": self.realm_id(),
            "config": {"priority": [str(priority)], "enabled": ["true"], "active": ["true" if active else "false"],
                       "algorithm": ["RS256"], "privateKey": [pem]}})
        _, keys, _ = self.kc.admin("GET", f"/{REALM}/keys")
        (found,) = [k for k in keys["keys"] if k.get("providerId") and self._component_name(k["providerId"]) == name]
        return key, found["kid"], found["providerId"]

    def _component_name(self, component_id):
        return self.kc.admin("GET", f"/{REALM}/components/{component_id}")[1]["name"]

    def remove_component(self, component_id):
        self.kc.admin("DELETE", f"/{REALM}/components/{component_id}")

    def mint(self, key, kid, claims, alg="RS256", headers=None):
        return sign(key, kid, alg, claims, headers)


class Browser:
    """A person at Keycloak's pages without JavaScript, as the portal sends them there: the authorization
    code flow of the public client `ipv-portal` with PKCE (S256). `start()` opens the sign-in (or the
    registration) page, `submit(fields)` fills the page's form, `code_tokens()` trades the code for tokens."""

    REDIRECT = "http://127.0.0.1:1/signed-in"  # never fetched: the code is read from the redirect

    def __init__(self, realm):
        self.realm, self.session, self.page, self.location = realm, requests.Session(), None, None
        self.verifier = secrets.token_urlsafe(48)

    def _send(self, method, url, **kwargs):
        # Keycloak marks its cookies Secure; browsers send those to http://127.0.0.1 (a secure context),
        # requests only when told.
        for cookie in self.session.cookies:
            cookie.secure = False
        return self.session.request(method, url, allow_redirects=False, timeout=10, **kwargs)

    def start(self, registration=False):
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        endpoint = "registrations" if registration else "auth"
        self.page = self.session.get(f"{self.realm.issuer}/protocol/openid-connect/{endpoint}", params={
            "client_id": "ipv-portal", "response_type": "code", "scope": "openid", "redirect_uri": self.REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": secrets.token_hex(8),
            "ui_locales": "en"}, timeout=10)
        self.page.raise_for_status()
        return self

    @property
    def text(self):
        return html.unescape(re.sub(r"<[^>]+>", " ", self.page.text))

    def submit(self, fields):
        action = html.unescape(re.search(r'<form[^>]*action="([^"]+)"', self.page.text).group(1))
        answer = self._send("POST", action, data=fields)
        while answer.is_redirect and not answer.headers["Location"].startswith(self.REDIRECT):
            answer = self._send("GET", answer.headers["Location"])
        if answer.is_redirect:
            self.location = answer.headers["Location"]
        else:
            self.page = answer
        return self

    def code_tokens(self):
        """The tokens for the code the realm redirected with (None: no redirect, still on a page)."""
        if not self.location:
            return None
        code = urllib.parse.parse_qs(urllib.parse.urlsplit(self.location).query)["code"][0]
        answer = requests.post(f"{self.realm.issuer}/protocol/openid-connect/token", data={
            "grant_type": "authorization_code", "client_id": "ipv-portal", "code": code,
            "redirect_uri": self.REDIRECT, "code_verifier": self.verifier}, timeout=10)
        answer.raise_for_status()
        return answer.json()
