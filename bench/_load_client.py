"""A closed-loop HTTP/1.1 load generator over keep-alive connections, for ``http_load.py``.

Run as ``python bench/_load_client.py PORT CONNECTIONS SECONDS REQUESTS.json``: each of
CONNECTIONS connections to 127.0.0.1:PORT sends the next request of the file (a JSON list of
raw HTTP/1.1 requests, each sent once) as soon as the previous answer arrived, until SECONDS
passed or the list ran out; prints one JSON line: ``{"seconds", "latencies", "statuses",
"exhausted"}``. Standard library only, asyncio and raw bytes: the least CPU per request a
Python client can spend, since it shares the cores with the server it measures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter


async def _connection(
    port: int,
    requests: list[bytes],
    deadline: float,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while requests and time.perf_counter() < deadline:
            request = requests.pop()
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            statuses[status] += 1
            if close:  # the server would not keep the connection: open another
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
    finally:
        writer.close()


async def _run(
    port: int, connections: int, seconds: float, requests: list[bytes]
) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    requests.reverse()  # pop() from the end takes them in file order
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(
        *(_connection(port, requests, deadline, latencies, statuses) for _ in range(connections))
    )
    return {
        "seconds": time.perf_counter() - start,
        "latencies": latencies,
        "statuses": {str(k): v for k, v in statuses.items()},
        "exhausted": not requests,
    }


def main() -> None:
    port, connections, seconds, path = sys.argv[1:5]
    with open(path, encoding="utf-8") as file:
        requests = [r.encode() for r in json.load(file)]
    result = asyncio.run(_run(int(port), int(connections), float(seconds), requests))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
