#!/usr/bin/env python3
"""Writes the telex-fuzz seed corpus and dictionary from Protocol/vectors (used by Scripts/fuzz.sh).

Each seed is one fuzz input: a mode byte (see Sources/telex-fuzz/FuzzTarget.swift) then that mode's bytes.
Usage: fuzz-corpus.py VECTOR_DIR CORPUS_DIR DICT_FILE
"""
import glob
import hashlib
import json
import os
import struct
import sys

FRAME_STREAM, BODY, BATCH, BATCH_FIXED_CRC, INFLATE, BATCHES = range(6)


def batches_of(frame):
    """The batches in a PUBLISH (type 3) or DELIVER (type 7) frame, bad vectors' included, split by batchLength."""
    if len(frame) < 12 or frame[5] not in (3, 7):
        return []
    body = frame[12:]
    if frame[5] == 7:
        body = body[4:]
    if len(body) < 2:
        return []
    body = body[2 + struct.unpack(">H", body[:2])[0]:]
    found = []
    while len(body) >= 64:
        size = 12 + struct.unpack(">I", body[8:12])[0]
        found.append(body[:size])
        body = body[size:]
    return found


def records_section(batch):
    """The records section after the header and, with flags bit 0, the key table (PROTOCOL.md §6.1)."""
    if struct.unpack(">H", batch[26:28])[0] & 1 and len(batch) >= 68:
        return batch[68 + struct.unpack(">I", batch[64:68])[0]:]
    return batch[64:]


def main():
    vector_dir, corpus_dir, dict_file = sys.argv[1:4]
    os.makedirs(corpus_dir, exist_ok=True)
    seeds = []
    strings = set()
    conversation = b""
    for path in sorted(glob.glob(os.path.join(vector_dir, "*.json")) + glob.glob(os.path.join(vector_dir, "bad", "*.json"))):
        with open(path) as f:
            vector = json.load(f)
        frame = bytes.fromhex(vector["hex"])
        seeds.append(bytes([FRAME_STREAM, 0xFF]) + frame)
        seeds.append(bytes([FRAME_STREAM, 7]) + frame)
        if len(frame) >= 12:
            seeds.append(bytes([BODY, frame[5]]) + frame[12:])
        if "/bad/" not in path:
            conversation += frame
        message = vector.get("message", {})
        batches = batches_of(frame)
        for batch in batches:
            seeds.append(bytes([BATCH]) + batch)
            seeds.append(bytes([BATCH_FIXED_CRC]) + batch)
            if len(batch) >= 64 and batch[25] == 1:  # the codec byte says zlib
                uncompressed = struct.unpack(">I", batch[60:64])[0]
                seeds.append(bytes([INFLATE]) + struct.pack(">I", uncompressed) + records_section(batch))
        if len(batches) > 1:
            seeds.append(bytes([BATCHES]) + b"".join(batches))
        for key in ("topic", "pattern", "consumerName", "clientName", "serverName", "consumer"):
            if isinstance(message.get(key), str) and message[key]:
                strings.add(message[key])
    seeds.append(bytes([FRAME_STREAM, 0xFF]) + conversation)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        with open(os.path.join(corpus_dir, name), "wb") as f:
            f.write(seed)
    tokens = sorted(strings) + ["news.", ">", "*", ".>", "ce-type", "ce-id", "article.deleted"]
    with open(dict_file, "w") as f:
        for token in tokens:
            escaped = "".join(c if c.isalnum() or c in ".-_>*" else "\\x%02x" % ord(c) for c in token)
            f.write('"%s"\n' % escaped)
        f.write('"\\x78\\x01"\n"\\x78\\x9c"\n')
    print(len(seeds))


if __name__ == "__main__":
    main()
