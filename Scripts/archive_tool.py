#!/usr/bin/env python3
"""Helpers for Scripts/archive.sh: the S3 side of the archive test, through boto3 (installed with moto).

    archive_tool.py make-bucket ENDPOINT BUCKET
    archive_tool.py manifests ENDPOINT BUCKET PREFIX TOPIC       one line per manifest: base next bytes rewrites
    archive_tool.py corrupt ENDPOINT BUCKET PREFIX TOPIC BASE    flips one byte in the middle of that segment's .log
    archive_tool.py corrupt-batch ENDPOINT BUCKET PREFIX TOPIC BASE   the same, and rewrites the manifest's checksums to match
    archive_tool.py require-auth ENDPOINT                         turns on moto's signature checks; prints a valid key pair
    archive_tool.py proxy LISTEN_PORT TARGET_PORT [SLOW_FLAG]     a TCP proxy to TARGET_PORT (killed to cut the store off;
                                                                  uploads at ~1 MB/s while the file SLOW_FLAG exists)
    archive_tool.py events COUNT TOPIC FILE                      COUNT CloudEvents of ~2 KB that compress ~2:1
    archive_tool.py check FILE EXPECTED_FILE [FIRST]             telex-sub output = expected events, offsets FIRST.. in order

Credentials come from the AWS_* environment variables, as for telexd.
"""
import json
import random
import socket
import sys
import threading


def client(endpoint):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def key(prefix, rest):
    return f"{prefix}/{rest}" if prefix else rest


def manifests(endpoint, bucket, prefix, topic):
    s3 = client(endpoint)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key(prefix, f"topics/{topic}/")):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".manifest"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found.append(json.loads(body))
    return sorted(found, key=lambda m: m["baseOffset"])


def proxy(listen_port, target_port, slow_flag=None):
    # While the file slow_flag exists, bytes towards the store go at ~1 MB/s (an upload of a 1 MiB segment takes
    # a second), and slow_flag + ".seen" is created once such bytes went through: the script kills telexd then.
    import os
    import time
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(64)

    def pipe(source, sink, towards_store):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if towards_store and slow_flag and os.path.exists(slow_flag):
                    time.sleep(len(data) / 1_000_000)
                    if len(data) >= 16384:
                        open(slow_flag + ".seen", "w").close()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        downstream, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            downstream.close()
            continue
        threading.Thread(target=pipe, args=(downstream, upstream, True), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, downstream, False), daemon=True).start()


def events(count, topic, path):
    # Words of random letters: text that deflates about 2:1, so 100 MB of log needs ~100,000 events, not 750,000.
    rng = random.Random(14)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
                  for _ in range(50000)]
    with open(path, "w") as out:
        for index in range(count):
            words = " ".join(rng.choice(vocabulary) for _ in range(300))
            uri = f"urn:telex:archive:{index % 5000}"
            out.write(json.dumps({
                "specversion": "1.0", "id": f"arc-{index:08d}", "source": "urn:telex:archive-test",
                "type": "article.updated", "topic": topic, "subject": uri,
                "data": {"uri": uri, "type": "text", "version": str(index // 5000),
                         "headlines": [{"role": "main", "value": f"Archive test article {index}"}],
                         "bodies": [{"role": "text", "contentType": "text/plain", "value": words}]},
            }, separators=(",", ":")) + "\n")


def check(path, expected_path, first):
    expected = [json.loads(line)["id"] for line in open(expected_path)]
    got = [json.loads(line) for line in open(path)]
    if len(got) != len(expected) - first:
        sys.exit(f"check: {path} has {len(got)} events, expected {len(expected) - first} (offsets {first}..)")
    for index, event in enumerate(got):
        offset = first + index
        if event["offset"] != offset:
            sys.exit(f"check: line {index + 1} of {path} has offset {event['offset']}, expected {offset}")
        if event["id"] != expected[offset]:
            sys.exit(f"check: offset {offset} is event {event['id']}, expected {expected[offset]}")
    print(f"check: {len(got)} events, offsets {first}-{first + len(got) - 1} in order, each the one published")


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "make-bucket":
        client(args[0]).create_bucket(Bucket=args[1])
    elif command == "manifests":
        for m in manifests(*args):
            print(m["baseOffset"], m["nextOffset"], m["bytes"], m["rewrites"])
    elif command in ("corrupt", "corrupt-batch"):
        # corrupt-batch goes past the checksums: the manifest is made to match the damaged bytes, so only the
        # batches' CRCs can tell.
        import hashlib
        endpoint, bucket, prefix, topic, base = args
        s3 = client(endpoint)
        manifest = next(m for m in manifests(endpoint, bucket, prefix, topic) if m["baseOffset"] == int(base))
        body = bytearray(s3.get_object(Bucket=bucket, Key=manifest["logKey"])["Body"].read())
        body[len(body) // 2] ^= 0x5A
        s3.put_object(Bucket=bucket, Key=manifest["logKey"], Body=bytes(body))
        if command == "corrupt-batch":
            manifest["sha256"] = hashlib.sha256(body).hexdigest()
            manifest["md5"] = hashlib.md5(body).hexdigest()
            manifest_key = key(prefix, f"topics/{topic}/{int(base):020d}.manifest")
            s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(manifest, sort_keys=True).encode())
        print(manifest["logKey"])
    elif command == "require-auth":
        import boto3
        import urllib.request
        iam = boto3.client("iam", endpoint_url=args[0], region_name="us-east-1",
                           aws_access_key_id="setup", aws_secret_access_key="setup")
        iam.create_user(UserName="telex-archive-test")
        iam.put_user_policy(UserName="telex-archive-test", PolicyName="everything", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        access = iam.create_access_key(UserName="telex-archive-test")["AccessKey"]
        urllib.request.urlopen(urllib.request.Request(args[0] + "/moto-api/reset-auth", data=b"0", method="POST",
                                                      headers={"Content-Type": "text/plain"}))
        print(access["AccessKeyId"], access["SecretAccessKey"])
    elif command == "proxy":
        proxy(int(args[0]), int(args[1]), args[2] if len(args) > 2 else None)
    elif command == "events":
        events(int(args[0]), args[1], args[2])
    elif command == "check":
        check(args[0], args[1], int(args[2]) if len(args) > 2 else 0)
    else:
        sys.exit(f"archive_tool.py: unknown command {command}")


if __name__ == "__main__":
    main()
