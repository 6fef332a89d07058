"""The checkpoint signing key: Ed25519, read from AUDIT_SIGNING_KEY (a PEM file: a Kubernetes
Secret mounted read-only, or generated into var/ for a local run; never committed)."""
import os

from nameko.extensions import DependencyProvider

from ipvkit.config import required
from services.audit import ledger


class Signer:
    def __init__(self, private_key):
        self.private_key = private_key
        self.public_pem = ledger.public_key_pem(private_key)
        self.key_id = ledger.key_id(self.public_pem)

    def sign(self, size, root_hex, chain_hex, signed_at):
        return ledger.sign_checkpoint(self.private_key, size, root_hex, chain_hex, signed_at)


def load_or_create(path):
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            # O_EXCL: two processes starting at once keep one key between them.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(ledger.new_private_key_pem())
        except FileExistsError:
            pass
    with open(path, "rb") as handle:
        return Signer(ledger.load_private_key(handle.read()))


class SigningKey(DependencyProvider):
    def setup(self):
        self.signer = load_or_create(required(self.container.config, "AUDIT_SIGNING_KEY"))

    def get_dependency(self, worker_ctx):
        return self.signer
