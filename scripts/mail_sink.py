#!/usr/bin/python3
"""A mail server for flashtix's notices, in tests, demos and drills.

Takes SMTP on --listen and delivers each message to the Maildir --maildir,
as a real mail server's local delivery would: a file written in tmp/, then
renamed into new/. Built on aiosmtpd (Debian: python3-aiosmtpd). It prints
`listening on smtp://HOST:PORT` once it takes connections, and stops on
SIGTERM or SIGINT.

--delay-ms holds each message that long before taking it: a slow mail
server, so that a sender can be caught in the middle of sending.
"""

import argparse
import asyncio
import signal

from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import SMTP


class SlowMailbox(Mailbox):
    """A Maildir delivery that takes its time."""

    def __init__(self, maildir, delay):
        super().__init__(maildir)
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


async def serve(host, port, maildir, delay):
    handler = SlowMailbox(maildir, delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="flashtix-mail-sink"), host, port
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening on smtp://{host}:{port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:2525", help="HOST:PORT (port 0: any)")
    parser.add_argument("--maildir", required=True, help="the Maildir to deliver to")
    parser.add_argument("--delay-ms", type=int, default=0, help="hold each message this long")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    asyncio.run(serve(host, int(port), args.maildir, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
