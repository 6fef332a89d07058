"""Calling another service's @rpc method from an HTTP route without hanging the route: nameko's proxy would
wait in the target's queue for as long as no pod of it runs, and for ever when one does not answer."""
import eventlet
from amqp.exceptions import NotFound as QueueNotFound
from kombu import Connection
from nameko.exceptions import UnknownService
from nameko.rpc import RPC_QUEUE_TEMPLATE, Rpc, RpcConsumer

from ipvkit.amqp import rpc_queue_arguments
from ipvkit.errors import Unavailable


class QuorumRpcConsumer(RpcConsumer):
    """nameko's RPC consumer with its `rpc-<service>` queue declared as ipvkit.amqp says (quorum)."""

    def setup(self):
        super().setup()
        self.queue.queue_arguments = rpc_queue_arguments()  # read when the queue consumer declares it


class QuorumRpc(Rpc):
    rpc_consumer = QuorumRpcConsumer()


rpc = QuorumRpc.decorator


def ask(proxy, method, *args, amqp_uri, timeout, absent, **kwargs):
    """`proxy.method(*args, **kwargs)` (`proxy`: a worker's RpcProxy), or Unavailable (503) with `absent` at
    once when no pod of the target listens on its queue, and after `timeout` seconds without an answer."""
    queue = RPC_QUEUE_TEMPLATE.format(proxy.service_name)
    try:
        with Connection(amqp_uri) as conn:
            listening = conn.default_channel.queue_declare(queue, passive=True).consumer_count
    except QueueNotFound:
        listening = 0
    if not listening:
        raise Unavailable(absent)
    try:
        with eventlet.Timeout(timeout, Unavailable(f"the {proxy.service_name} service did not answer in time")):
            return getattr(proxy, method)(*args, **kwargs)
    except UnknownService:
        raise Unavailable(absent)
