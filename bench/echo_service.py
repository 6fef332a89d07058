"""The ceiling: a nameko service that does nothing but answer, over the same broker (RPC) and the
same HTTP server (@http) the real services use, measured in the same run on the same machine."""
from nameko.rpc import rpc
from nameko.web.handlers import http


class EchoService:
    name = "bench_echo"

    @rpc
    def echo(self, value):
        return value

    @http("GET", "/echo")
    def echo_http(self, request):
        return 200, '{"echo": true}'
