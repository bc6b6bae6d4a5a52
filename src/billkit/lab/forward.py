"""A minimal TCP forwarder: ``python -m billkit.lab.forward LISTEN_HOST LISTEN_PORT DEST_HOST DEST_PORT``.

Publishes the WAF host's HTTPS port on the machine's loopback, the lab's only entry for users.
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _serve(listen_host: str, listen_port: int, dest_host: str, dest_port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(dest_host, dest_port), 5)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen_host, listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen_host, listen_port, dest_host, dest_port = argv
    asyncio.run(_serve(listen_host, int(listen_port), dest_host, int(dest_port)))


if __name__ == "__main__":
    main(sys.argv[1:])
