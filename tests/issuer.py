"""A token issuer of the tests' own, for the many tests that need a token for any (role, subject): key
pairs made in this process, their public halves served as a JWKS by a small HTTP server on loopback,
so the services under test verify tokens exactly as they verify Keycloak's (by public key, with iss,
aud, exp). Tests of sign-in itself, the authorization matrix and the fuzz tests use real realm tokens
(tests/realm.py). Benchmarks and the fault tests use it too: their services run as processes and need
no Keycloak."""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "ipv-api"
CERTS_PATH = "protocol/openid-connect/certs"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_key(alg):
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


def public_jwk(key, kid, alg):
    algorithm = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    return dict(jwk, kid=kid, alg=alg, use="sig")


def sign(key, kid, alg, claims, headers=None):
    return jwt.encode(claims, key, algorithm=alg, headers=dict({"kid": kid}, **(headers or {})))


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(claims, alg, kid, secret=b""):
    """A token PyJWT refuses to make: `alg: none` (no signature) or HS256 keyed with `secret` (a public
    key used as an HMAC secret, the classic algorithm confusion)."""
    payload = {k: int(v.timestamp()) if isinstance(v, datetime) else v for k, v in claims.items()}
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    signing_input = f"{head}.{_b64(json.dumps(payload).encode())}"
    if alg == "none":
        return signing_input + "."
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def access_claims(issuer, role, subject, ttl=timedelta(minutes=5), now=None, audience=AUDIENCE):
    """Claims shaped like a Keycloak access token of the realm `ipv`."""
    now = now or datetime.now(timezone.utc)
    claims = {"iss": issuer, "aud": audience, "sub": str(uuid.uuid4()), "typ": "Bearer", "azp": "ipv-cli",
              "iat": now, "exp": now + ttl, "realm_access": {"roles": [role]}}
    if role in ("enterprise", "agency"):
        claims["org"] = subject
        claims["preferred_username"] = f"{role}-{subject}".lower()
    else:
        claims["preferred_username"] = subject
    return claims


class Signer:
    """What signs tokens of a LocalIssuer, picklable for other processes (the benchmark's clients)."""

    def __init__(self, issuer, pem, kid):
        self.issuer, self.pem, self.kid, self._key = issuer, pem, kid, None

    def __getstate__(self):
        return {"issuer": self.issuer, "pem": self.pem, "kid": self.kid, "_key": None}

    ENV = "IPV_TEST_SIGNER"

    def to_env(self):
        """For a child process: {IPV_TEST_SIGNER: ...}; the child calls Signer.from_env()."""
        return {self.ENV: json.dumps({"issuer": self.issuer, "pem": self.pem.decode(), "kid": self.kid})}

    @classmethod
    def from_env(cls):
        held = json.loads(os.environ[cls.ENV])
        return cls(held["issuer"], held["pem"].encode(), held["kid"])

    def token(self, role, subject, ttl=timedelta(hours=2)):
        if self._key is None:
            self._key = serialization.load_pem_private_key(self.pem, password=None)
        return sign(self._key, self.kid, "RS256", access_claims(self.issuer, role, subject, ttl=ttl))


class LocalIssuer:
    """`LocalIssuer().start()`: an issuer URL whose `/protocol/openid-connect/certs` publishes an RS256, an
    ES256 and an EdDSA key; `token(role, subject)` signs with one of them."""

    def __init__(self):
        self.keys = {alg: (new_key(alg), f"test-{alg.lower()}-{uuid.uuid4().hex[:8]}") for alg in
                     ("RS256", "ES256", "EdDSA")}
        self.dir = Path(tempfile.mkdtemp(prefix="ipv-issuer-"))
        self.port = _free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/test"
        self.process = None

    def start(self):
        certs = self.dir / "realms/test" / CERTS_PATH
        certs.parent.mkdir(parents=True)
        certs.write_text(json.dumps({"keys": [public_jwk(k, kid, alg) for alg, (k, kid) in self.keys.items()]}))
        # A process of its own: services in other processes (fault tests, benchmarks) fetch from it while
        # this one is busy or blocked.
        self.process = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                         "--directory", str(self.dir), str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.issuer}/{CERTS_PATH}", timeout=2).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the tests' token issuer did not start")
                time.sleep(0.1)

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(10)

    @property
    def config(self):
        """What a service's config needs to trust this issuer."""
        return {"OIDC_ISSUER": self.issuer, "OIDC_AUDIENCE": AUDIENCE}

    def token(self, role, subject, alg="RS256", **claims_kw):
        key, kid = self.keys[alg]
        return sign(key, kid, alg, access_claims(self.issuer, role, subject, **claims_kw))

    def signer(self):
        key, kid = self.keys["RS256"]
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return Signer(self.issuer, pem, kid)

    def header(self, role, subject, **kw):
        return {"Authorization": f"Bearer {self.token(role, subject, **kw)}"}
