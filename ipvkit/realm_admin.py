"""The few calls services make to the Keycloak realm's admin API, as the confidential client `ipv-tooling`
(client credentials; its service account may view events and manage users, nothing else): bind a verified
enterprise's account to it, invite an agency's person, read sign-in events.

Configuration: OIDC_ISSUER (the realm; the admin API is found beside it, or at IDENTITY_ADMIN_URL where
the services reach Keycloak by another address), IDENTITY_CLIENT_ID, IDENTITY_CLIENT_SECRET."""
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request

from nameko.extensions import DependencyProvider

from ipvkit.errors import BadRequest, Conflict, Unavailable


class RealmAdmin:
    def __init__(self, issuer, client_id, client_secret, base_url=None, timeout=10):
        issuer = issuer.rstrip("/")
        server, _, realm = issuer.rpartition("/realms/")
        base = (base_url or server).rstrip("/")
        self.token_url = f"{base}/realms/{realm}/protocol/openid-connect/token"
        self.admin_url = f"{base}/admin/realms/{realm}"
        self.client_id, self.client_secret, self.timeout = client_id, client_secret, timeout
        self._token, self._until = None, 0.0

    @classmethod
    def from_config(cls, config):
        """None when the service is not given the tooling client (then it makes no admin calls)."""
        if not config.get("IDENTITY_CLIENT_SECRET"):
            return None
        return cls(config["OIDC_ISSUER"], config.get("IDENTITY_CLIENT_ID") or "ipv-tooling",
                   config["IDENTITY_CLIENT_SECRET"], config.get("IDENTITY_ADMIN_URL") or None)

    def _send(self, method, url, body=None, form=None, token=None):
        headers, data = {}, None
        if form is not None:
            data, headers["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None), response.headers
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            if exc.code == 409:
                raise Conflict(f"the identity provider already has this account: {detail}")
            if exc.code == 400:
                raise BadRequest(f"the identity provider refused the account: {detail}")
            # Anything else is the identity provider's trouble or its configuration's, not the caller's.
            raise Unavailable(f"the identity provider answered {exc.code}: {detail}; retry")
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise Unavailable(f"the identity provider cannot be reached ({exc}); retry")

    def token(self):
        if time.monotonic() >= self._until:
            _, answer, _ = self._send("POST", self.token_url, form={
                "grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self.client_secret})
            self._token, self._until = answer["access_token"], time.monotonic() + answer["expires_in"] - 20
        return self._token

    def call(self, method, path, body=None):
        return self._send(method, self.admin_url + path, body=body, token=self.token())

    # -- accounts ----------------------------------------------------------------------------------
    def bind_organisation(self, user_id, org):
        """The account acts for `org` from its next token on (the `org` attribute, which only
        administrators may change)."""
        _, user, _ = self.call("GET", f"/users/{urllib.parse.quote(user_id)}")
        attributes = dict(user.get("attributes") or {}, org=[org])
        self.call("PUT", f"/users/{urllib.parse.quote(user_id)}", dict(user, attributes=attributes))

    def invite(self, email, role, org):
        """An account for a person of an organisation: role `role`, acting for `org`, a one-time password
        that must be changed at the first sign-in. Returns (username, that password)."""
        password = "Aa1!" + secrets.token_urlsafe(15)  # meets the realm's policy; replaced at first sign-in
        _, _, headers = self.call("POST", "/users", {
            "username": email, "email": email, "enabled": True, "emailVerified": False,
            "attributes": {"org": [org]}, "requiredActions": ["UPDATE_PASSWORD"],
            "credentials": [{"type": "password", "value": password, "temporary": True}]})
        user_id = headers["Location"].rsplit("/", 1)[1]
        try:
            self.set_only_role(user_id, role)
        except Exception:
            self.call("DELETE", f"/users/{user_id}")  # no half-made account: the invitation can be repeated
            raise
        return email, password

    def set_only_role(self, user_id, role):
        """`role` and none of the realm's default roles (whose `enterprise` is for self-registration)."""
        _, wanted, _ = self.call("GET", f"/roles/{role}")
        _, held, _ = self.call("GET", f"/users/{user_id}/role-mappings/realm")
        self.call("POST", f"/users/{user_id}/role-mappings/realm", [wanted])
        others = [r for r in held or [] if r["name"] != role]
        if others:
            self.call("DELETE", f"/users/{user_id}/role-mappings/realm", others)

    # -- sign-in events ----------------------------------------------------------------------------
    def events(self, since_ms, first=0, page=100):  # page: services/audit/identity.PAGE
        """The realm's user events (sign-in, failure, ...) from `since_ms` on, oldest first."""
        query = urllib.parse.urlencode({"dateFrom": since_ms, "first": first, "max": page, "direction": "asc"})
        return self.call("GET", f"/events?{query}")[1] or []

    def admin_events(self, since_ms, first=0, page=100):
        """Administrators' changes (role mappings, users): the trail of who gave whom a role."""
        query = urllib.parse.urlencode({"dateFrom": since_ms, "first": first, "max": page, "direction": "asc"})
        return self.call("GET", f"/admin-events?{query}")[1] or []


class Realm(DependencyProvider):
    """A service's RealmAdmin (or None without the tooling client's secret), built once at start."""

    def setup(self):
        self.admin = RealmAdmin.from_config(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.admin
