#!/usr/bin/env python3
"""Abusive clients against a running telexd, and one well-behaved client measured meanwhile.

Used by Scripts/abuse.sh; standard library only. Speaks the wire protocol of Protocol/PROTOCOL.md by hand:
(a) idle connections that never send HELLO, (b) slow-loris connections trickling HELLO one byte a second,
(c) a publisher that pipelines publishes and never reads its acks, (d) a subscriber that never reads, and
(e) a well-behaved publisher (publish, wait for the ack) with a subscriber that reads everything.
"""
import argparse
import selectors
import socket
import struct
import threading
import time
import zlib

HELLO, HELLO_OK, PUBLISH, PUBLISH_ACK, SUBSCRIBE, SUBSCRIBED, DELIVER, CREDIT = 1, 2, 3, 4, 5, 6, 7, 8
ERROR, CAUGHT_UP = 0x0F, 0x10
ERROR_NAMES = {21: "TOO_MANY_CONNECTIONS", 22: "HANDSHAKE_TIMEOUT", 23: "TOO_MANY_TOPICS", 24: "RATE_LIMITED",
               25: "TOO_MANY_SUBSCRIPTIONS"}


def frame(kind, request_id, body):
    return struct.pack(">IBBHI", 8 + len(body), 1, kind, 0, request_id) + body


def string(text):
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def hello(name):
    return frame(HELLO, 1, bytes([1, 1]) + string(name) + struct.pack(">H", 0))


def batch(values):
    """One uncompressed record batch (PROTOCOL.md §6) of the given record values."""
    now = int(time.time() * 1000)
    records = b""
    for value in values:
        body = struct.pack(">iH", 0, 3) + b"key" + struct.pack(">HI", 0, len(value)) + value
        records += struct.pack(">I", len(body)) + body
    rest = struct.pack(">BBHqqqiII", 1, 0, 0, now, now, 0, -1, len(values), len(records)) + records
    return struct.pack(">qIqI", 0, 12 + len(rest), 0, zlib.crc32(rest)) + rest


def publish(topic, request_id, batch_bytes):
    return frame(PUBLISH, request_id, string(topic) + batch_bytes)


def subscribe(subscription_id, pattern, credit, request_id):
    body = struct.pack(">I", subscription_id) + string(pattern) + struct.pack(">Bq", 0, 0) + string("")
    return frame(SUBSCRIBE, request_id, body + struct.pack(">IH", credit, 0))


def credit(subscription_id, batches):
    return frame(CREDIT, 0, struct.pack(">II", subscription_id, batches))


class Reader:
    """Reads whole frames from a blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def next(self):
        while True:
            if len(self.buffer) >= 4:
                length = struct.unpack(">I", self.buffer[:4])[0]
                if len(self.buffer) >= 4 + length:
                    data, self.buffer = self.buffer[:4 + length], self.buffer[4 + length:]
                    kind, request_id = data[5], struct.unpack(">I", data[8:12])[0]
                    return kind, request_id, data[12:]
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.buffer += chunk


def error_name(body):
    code = struct.unpack(">H", body[:2])[0]
    return ERROR_NAMES.get(code, "code %d" % code)


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def idle_connections(port, count, results):
    """(a) count connections that send nothing; records when and how each was closed."""
    selector = selectors.DefaultSelector()
    opened = {}
    refused = 0
    for _ in range(count):
        try:
            sock = connect(port)
        except OSError:
            refused += 1
            continue
        sock.setblocking(False)
        opened[sock] = (time.monotonic(), b"")
        selector.register(sock, selectors.EVENT_READ)
    closed, errors = [], {}
    deadline = time.monotonic() + results["wait"]
    while opened and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            started, data = opened[sock]
            try:
                chunk = sock.recv(4096)
            except OSError:
                chunk = b""
            if chunk:
                opened[sock] = (started, data + chunk)
                continue
            if len(data) >= 14 and data[5] == ERROR:
                name = error_name(data[12:])
                errors[name] = errors.get(name, 0) + 1
            closed.append(time.monotonic() - started)
            selector.unregister(sock)
            sock.close()
            del opened[sock]
    results.update(opened=count - refused, refused=refused, closed=len(closed), still_open=len(opened),
                   errors=errors, first_close=min(closed, default=None), last_close=max(closed, default=None))
    for sock in opened:
        sock.close()


def slow_loris(port, results, index):
    """(b) trickles HELLO one byte a second; records when the broker closed it and with what."""
    sock = connect(port)
    started = time.monotonic()
    message = hello("slow-loris-%d" % index)
    sent = 0
    outcome = "still open"
    sock.settimeout(1.0)
    reader = Reader(sock)
    try:
        while sent < len(message):
            sock.send(message[sent:sent + 1])
            sent += 1
            try:
                received = reader.next()
            except socket.timeout:
                continue
            if received is None:
                outcome = "closed without a frame"
            elif received[0] == ERROR:
                outcome = error_name(received[2])
            else:
                outcome = "answered %d" % received[0]
            break
    except OSError as error:
        outcome = "closed (%s)" % error.__class__.__name__
    results.append((outcome, time.monotonic() - started, sent))
    sock.close()


def flooder(port, stop, results):
    """(c) pipelines publishes of 16 KiB batches and never reads the acks."""
    sock = connect(port)
    sock.sendall(hello("flooder"))
    sock.settimeout(0.2)
    frame_bytes = publish("abuse.flood", 2, batch([b"x" * 16384]))
    sent, last_progress, started = 0, time.monotonic(), time.monotonic()
    while not stop.is_set():
        try:
            sock.sendall(frame_bytes)
            sent += len(frame_bytes)
            last_progress = time.monotonic()
        except socket.timeout:
            # sendall may have sent part of the frame; the stream is then out of step, which is fine for
            # the broker's sake (it never reads further) and means this client is stalled anyway.
            pass
        except OSError:
            break
    results.update(sent=sent, stalled_for=time.monotonic() - last_progress, ran=time.monotonic() - started)
    sock.close()


def sleeping_subscriber(port, stop):
    """(d) subscribes to everything from the beginning with a large credit and never reads."""
    sock = connect(port)
    sock.sendall(hello("sleeper") + subscribe(1, ">", 4096, 2))
    stop.wait()
    sock.close()


def good_client(port, stop, results):
    """(e) publishes one small batch at a time and waits for its ack; a second connection reads them all."""
    subscriber = connect(port)
    sub_reader = Reader(subscriber)
    subscriber.sendall(hello("good-subscriber") + subscribe(1, "good.news", 64, 2))
    received = [0]

    def read_deliveries():
        while True:
            got = sub_reader.next()
            if got is None:
                return
            if got[0] == DELIVER:
                # subscriptionId u32, topic string, then batches: count records from each batch header.
                body = got[2]
                position = 4 + 2 + struct.unpack(">H", body[4:6])[0]
                batches = 0
                while position < len(body):
                    length = struct.unpack(">I", body[position + 8:position + 12])[0]
                    received[0] += struct.unpack(">I", body[position + 56:position + 60])[0]
                    position += length + 12
                    batches += 1
                subscriber.sendall(credit(1, batches))

    threading.Thread(target=read_deliveries, daemon=True).start()
    sock = connect(port)
    reader = Reader(sock)
    sock.sendall(hello("good-publisher"))
    reader.next()
    latencies, published, errors = [], 0, 0
    request_id = 2
    while not stop.is_set():
        started = time.monotonic()
        sock.sendall(publish("good.news", request_id, batch([b"article %d" % request_id])))
        answer = reader.next()
        if answer is None:
            errors += 1
            break
        if answer[0] == PUBLISH_ACK:
            latencies.append(time.monotonic() - started)
            published += 1
        else:
            errors += 1
        request_id += 1
        time.sleep(0.01)
    time.sleep(1.0)
    latencies.sort()
    results.update(published=published, errors=errors, received=received[0],
                   p50=latencies[len(latencies) // 2] if latencies else None,
                   p99=latencies[int(len(latencies) * 0.99)] if latencies else None,
                   max=latencies[-1] if latencies else None)
    sock.close()
    subscriber.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--slow-loris", type=int, default=5)
    parser.add_argument("--handshake-timeout", type=float, default=10)
    args = parser.parse_args()

    stop = threading.Event()
    idle = {"wait": args.handshake_timeout + 5}
    loris, flood, good = [], {}, {}
    threads = [threading.Thread(target=idle_connections, args=(args.port, args.idle, idle))]
    threads += [threading.Thread(target=slow_loris, args=(args.port, loris, i)) for i in range(args.slow_loris)]
    threads += [threading.Thread(target=flooder, args=(args.port, stop, flood)),
                threading.Thread(target=sleeping_subscriber, args=(args.port, stop)),
                threading.Thread(target=good_client, args=(args.port, stop, good))]
    for thread in threads:
        thread.start()
    time.sleep(max(args.seconds, args.handshake_timeout + 5))
    stop.set()
    for thread in threads:
        thread.join()

    print("(a) idle connections: %d opened (%d refused at connect), %d closed by the broker %s, first after %.1f s, "
          "last after %.1f s, %d still open" % (idle["opened"], idle["refused"], idle["closed"], idle["errors"],
                                                idle["first_close"] or 0, idle["last_close"] or 0, idle["still_open"]))
    for outcome, seconds, sent in loris:
        print("(b) slow-loris: %s after %.1f s (%d bytes of HELLO sent)" % (outcome, seconds, sent))
    print("(c) flooder: %.1f MiB accepted by its socket in %.1f s; stalled for the last %.1f s" %
          (flood["sent"] / (1 << 20), flood["ran"], flood["stalled_for"]))
    print("(d) non-reading subscriber: connected to '>' with 4096 credit, never read")
    if good.get("p99") is None:
        print("(e) well-behaved client: no acknowledged publish (%s)" % good)
        raise SystemExit(1)
    print("(e) well-behaved client: %d publishes acknowledged, %d errors, %d records received; publish->ack "
          "p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (good["published"], good["errors"], good["received"],
                                                     good["p50"] * 1000, good["p99"] * 1000, good["max"] * 1000))
    if good["errors"] or good["received"] != good["published"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
