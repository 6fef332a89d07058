"""Real tokens from the Keycloak realm `ipv` that `make test` started, for the tests of sign-in, the
authorization matrix and the fuzz tests: a user per (role, subject) (the demo users where they fit, else
made once through the admin API), signed in by the password grant with a TOTP code for staff."""
import os
import uuid

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
