"""The one authenticated HTTP listener behind every webhook source (audit, Falco, registries).

A request is answered only after the collector has made its body durable on the bus (parsed, or
dead-lettered): the request thread queues the body and waits until `commit`. Senders retry on
any non-2xx, so a body that can never parse is still answered 200, once its dead letter is
durable; refusing it would block the sender's queue forever. Everything else is bounded: body
size, header size and count, connections (in all and per client address), requests per second
per client, and the time a client may take to send its headers and its request. The body is
read only after the credential is checked: a client without one costs a header parse.

  200  durable on the bus (events or a dead letter)
  400  not HTTP, a broken chunked body, a body shorter than its Content-Length, or a framing
       stated twice or loosely (RFC 9112: two Content-Lengths, one with Transfer-Encoding, a
       chunk size with a sign, 0x, spaces or underscores)
  401  no or wrong credential          403  a client certificate outside client_names
  405  not a POST                      411  neither Content-Length nor chunked
  413  larger than max_body_bytes      415  a Content-Encoding (no sender compresses bodies)
  414  a request line over 8 KiB       431  headers over max_header_bytes or max_headers
  429  the intake queue is full, or the client is over its connection or request-rate limit
       (Retry-After)
  503  the bus failed the last batch, the body was not durable within ack_timeout_secs, or
       max_connections are open (Retry-After)
"""

from ctrail.runtime.http.config import ListenerConfig
from ctrail.runtime.http.listener import HttpListener

__all__ = ["HttpListener", "ListenerConfig"]
