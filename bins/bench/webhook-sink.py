#!/usr/bin/env python3
"""A webhook endpoint for run.sh's `alerts` part, on 127.0.0.1 only (inside the benchmark's
private network namespace). Prints its port on the first line of stdout, then serves until it
is stopped (SIGTERM).

    webhook-sink.py blackhole      accepts every connection and never reads or answers
                                   (a dead endpoint behind a live TCP stack)
    webhook-sink.py slow SECONDS   reads each request, answers 200 after SECONDS
    webhook-sink.py ok             answers 200 at once

Bounded: at most MAX_HELD connections are held (the oldest is closed beyond it) and at most
MAX_THREADS requests are answered at once (the notifier makes one call at a time per target).
"""

import collections
import socket
import sys
import threading
import time

MAX_HELD = 256
MAX_THREADS = 64


def answer(conn, delay, slots):
    try:
        conn.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        while len(body) < min(length, 1 << 20):
            chunk = conn.recv(65536)
            if not chunk:
                return
            body += chunk
        time.sleep(delay)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()
        slots.release()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "blackhole"
    delay = float(sys.argv[2]) if mode == "slow" and len(sys.argv) > 2 else 0.0
    if mode not in ("blackhole", "slow", "ok"):
        sys.exit(f"unknown mode {mode!r} (blackhole, slow SECONDS, ok)")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    print(server.getsockname()[1], flush=True)
    held = collections.deque()
    slots = threading.BoundedSemaphore(MAX_THREADS)
    while True:
        conn, _ = server.accept()
        if mode == "blackhole":
            held.append(conn)
            if len(held) > MAX_HELD:
                held.popleft().close()
        elif slots.acquire(blocking=False):
            threading.Thread(target=answer, args=(conn, delay, slots), daemon=True).start()
        else:
            conn.close()


if __name__ == "__main__":
    main()
