#!/usr/bin/env python3
"""One HTTP/3 request with aioquic, an implementation independent of the router's (h3/quinn).

Used by tests/e2e_clients.rs. Connects to the host and port of URL, with TLS server name
--sni (also the request's :authority) verified against --ca; sends GET, or POST with the
contents of --data-file as the body (in 16 KiB DATA frames, no content-length); prints one
JSON object: status, headers ([name, value] pairs in order), body_length, body_sha256 and,
for bodies up to 64 KiB, body (UTF-8, invalid bytes replaced). Exits 1 with the reason on
stderr when no response comes (handshake refused, stream reset, timeout).
"""

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

BODY_SHOWN_UP_TO = 64 * 1024
CHUNK = 16 * 1024


class Client(QuicConnectionProtocol):
    """Collects the events of one request stream into a future."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.stream_id = None
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.done = self._loop.create_future()

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self._fail(f"connection closed: {event.error_code:#x} {event.reason_phrase}")
        elif isinstance(event, StreamReset) and event.stream_id == self.stream_id:
            self._fail(f"stream reset: {event.error_code:#x}")
        for h3_event in self.h3.handle_event(event):
            if getattr(h3_event, "stream_id", None) != self.stream_id:
                continue
            if isinstance(h3_event, HeadersReceived):
                for name, value in h3_event.headers:
                    name, value = name.decode(), value.decode(errors="replace")
                    if name == ":status":
                        self.status = int(value)
                    elif self.status is not None:
                        self.headers.append([name, value])
            elif isinstance(h3_event, DataReceived):
                self.body.extend(h3_event.data)
            if h3_event.stream_ended and not self.done.done():
                self.done.set_result(None)

    def _fail(self, reason):
        if not self.done.done():
            self.done.set_exception(ConnectionError(reason))

    async def request(self, method, authority, path, body):
        self.stream_id = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            self.stream_id,
            [
                (b":method", method.encode()),
                (b":scheme", b"https"),
                (b":authority", authority.encode()),
                (b":path", path.encode()),
                (b"user-agent", b"aioquic-e2e"),
            ],
            end_stream=body is None,
        )
        if body is not None:
            # aioquic queues it all and sends as flow control allows.
            for start in range(0, len(body), CHUNK):
                end = start + CHUNK
                self.h3.send_data(self.stream_id, body[start:end], end_stream=end >= len(body))
            if not body:
                self.h3.send_data(self.stream_id, b"", end_stream=True)
        self.transmit()
        await self.done


async def run(args):
    url = urlsplit(args.url)
    configuration = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    configuration.load_verify_locations(args.ca)
    configuration.verify_mode = ssl.CERT_REQUIRED
    configuration.server_name = args.sni
    body = None
    if args.data_file is not None:
        with open(args.data_file, "rb") as f:
            body = f.read()
    async with connect(
        url.hostname,
        url.port or 443,
        configuration=configuration,
        create_protocol=Client,
        wait_connected=True,
    ) as client:
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        method = "GET" if body is None else "POST"
        await client.request(method, args.sni, path, body)
        body = bytes(client.body)
        out = {
            "status": client.status,
            "headers": client.headers,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        if len(body) <= BODY_SHOWN_UP_TO:
            out["body"] = body.decode(errors="replace")
        print(json.dumps(out))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--sni", required=True)
    parser.add_argument("--ca", required=True, help="PEM file of the CA to trust")
    parser.add_argument("--data-file", help="POST this file's contents as the body")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    try:
        asyncio.run(asyncio.wait_for(run(args), args.timeout))
    except Exception as error:  # any failure is reported, not traced back
        print(f"h3_client: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
