"""Bearer tokens issued by the identity provider (Keycloak realm `ipv`), verified by its public keys.

A service holds no signing secret: it reads the realm's JSON Web Key Set (JWKS) from the issuer's
`/protocol/openid-connect/certs`, keeps it cached, and fetches it again when a token names a key it does
not know (a rotated key), at most once per `OIDC_JWKS_REFETCH_SECONDS` so forged key ids cannot make
it hammer the issuer. Configuration: OIDC_ISSUER, OIDC_AUDIENCE, and OIDC_JWKS_URL where the services
reach the issuer by another address than its public one (Kubernetes)."""
import threading
import time
from dataclasses import dataclass, field

import jwt
from jwt import PyJWKClient, PyJWKClientConnectionError, PyJWKClientError

from ipvkit.errors import Forbidden, Unauthorized, Unavailable

ROLES = ("enterprise", "agency", "officer", "auditor", "ops")
ORG_ROLES = ("enterprise", "agency")
# Asymmetric only: an HMAC algorithm would make the public key a signing secret, and `none` signs nothing.
ALGORITHMS = ("RS256", "ES256", "EdDSA")
LEEWAY_SECONDS = 30  # clock skew between the issuer and us
VERIFIED_KEPT = 10_000  # tokens whose signature this process checked: a bound, not an LRU


@dataclass(frozen=True)
class Principal:
    """Who calls: a role and an id (an enterprise's credit code, an agency's id, a staff username).
    `verified` is False for a self-registered enterprise account an officer has not verified yet: its id is
    the credit code it claims, good only for registering that enterprise. `account` is the person's account
    id in the realm (the token's `sub`)."""
    role: str
    id: str
    verified: bool = True
    account: str = field(default=None, compare=False)

    def as_actor(self):
        return {"role": self.role, "id": self.id}


SYSTEM = Principal("system", "system")


class TokenVerifier:
    """Checks a realm access token (signature by JWKS, iss, aud, exp, nbf, typ) and maps it to a Principal:
    the one platform role in `realm_access.roles`; id = the `org` claim for enterprise and agency (the
    organisation the person acts for), the username for staff."""

    def __init__(self, issuer, audience, jwks_url=None, refetch_seconds=10, timeout=5):
        if not issuer or not audience:
            raise ValueError("an issuer and an audience are required")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks = PyJWKClient(jwks_url or f"{self.issuer}/protocol/openid-connect/certs", lifespan=300,
                                timeout=timeout, cooldown_duration=refetch_seconds)
        self.verified = {}

    def claims(self, token):
        """A token's claims once verified. A client sends one token with every request until it
        expires, and checking its signature again was a twentieth of a request's CPU: a token seen
        before answers from memory while its `exp` still holds (its `nbf`, once passed, stays
        passed). A key withdrawn from the realm's key set is already honoured until the key set is
        fetched again (up to 300 s)."""
        claims = self.verified.get(token)
        if claims is not None:
            if time.time() > claims["exp"] + LEEWAY_SECONDS:
                self.verified.pop(token, None)
                raise Unauthorized("token expired")
            return claims
        claims = self._verify(token)
        if len(self.verified) >= VERIFIED_KEPT:
            self.verified.clear()
        self.verified[token] = claims
        return claims

    def _verify(self, token):
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}")
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise Unauthorized(f"token algorithm {alg!r} is not accepted (one of {', '.join(ALGORITHMS)})")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token names no signing key (kid)")
        try:
            key = self.jwks.get_signing_key(kid)
        except PyJWKClientConnectionError:
            raise Unavailable("the identity provider's signing keys cannot be fetched; retry")
        except PyJWKClientError:
            raise Unauthorized("token is signed by a key the identity provider does not publish")
        try:
            claims = jwt.decode(token, key, algorithms=list(ALGORITHMS), audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired")
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}")
        if claims.get("typ") != "Bearer":
            raise Unauthorized("not an access token")
        return claims

    def principal(self, token):
        claims = self.claims(token)
        granted = (claims.get("realm_access") or {}).get("roles")
        held = [role for role in ROLES if isinstance(granted, list) and role in granted]
        if not held:
            raise Forbidden("this account holds no role on the platform yet")
        if len(held) > 1:
            raise Forbidden(f"this account holds several roles ({', '.join(held)}); each person acts in one")
        role = held[0]
        account = claims.get("sub")
        if role in ORG_ROLES:
            subject = claims.get("org")
            if not isinstance(subject, str) or not subject:
                claimed = claims.get("credit_code")
                if role == "enterprise" and isinstance(claimed, str) and claimed:
                    return Principal(role, claimed, verified=False, account=account)
                raise Forbidden(f"this {role} account is not bound to an organisation yet")
        else:
            subject = claims.get("preferred_username") or claims.get("sub")
            if not isinstance(subject, str) or not subject:
                raise Unauthorized("token names no user")
        return Principal(role, subject, account=account)


_verifiers = {}
_verifiers_lock = threading.Lock()


def verifier_for(config):
    """One verifier (and so one JWKS cache) per issuer in a process, whatever number of routes ask."""
    issuer, audience = config.get("OIDC_ISSUER"), config.get("OIDC_AUDIENCE")
    if not issuer or not audience:
        raise RuntimeError("configuration OIDC_ISSUER and OIDC_AUDIENCE must be set (see the service's config.yaml)")
    jwks_url = config.get("OIDC_JWKS_URL") or None
    refetch = float(config.get("OIDC_JWKS_REFETCH_SECONDS") or 10)
    key = (issuer, audience, jwks_url, refetch)
    with _verifiers_lock:
        if key not in _verifiers:
            _verifiers[key] = TokenVerifier(issuer, audience, jwks_url, refetch_seconds=refetch)
        return _verifiers[key]


def principal_from_header(verifier, header):
    """The Principal of an `Authorization: Bearer <token>` header; `verifier` is a TokenVerifier or a
    service config holding OIDC_ISSUER and OIDC_AUDIENCE."""
    if not isinstance(verifier, TokenVerifier):
        verifier = verifier_for(verifier)
    if not header:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return verifier.principal(token.strip())


def require_role(principal, *roles, unverified=False):
    """`unverified`: the route also serves enterprise accounts not verified yet (registering their enterprise)."""
    if principal.role not in roles:
        raise Forbidden(f"role {principal.role!r} may not do this; needs one of: {', '.join(roles)}")
    if not principal.verified and not unverified:
        raise Forbidden(f"enterprise {principal.id} is not verified yet: register it, then an officer verifies it "
                        "(实名认证) before this account acts for it")
