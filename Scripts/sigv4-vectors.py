#!/usr/bin/env python3
"""Writes Tests/TelexS3Tests/Fixtures/sigv4-vectors.json: S3 requests signed by botocore's own S3 SigV4 signer.

Fixed credentials and a fixed timestamp, so the output is stable; TelexS3's SigV4Signer must reproduce every
canonical request, string to sign and Authorization header byte for byte. Object keys are percent-encoded the
way botocore's REST serializer does it (UTF-8, '/' and '~' kept); query parameters go through request.params.
Run: python3 Scripts/sigv4-vectors.py   (needs botocore: pip install botocore)
"""
import hashlib
import json
import os
import types
from datetime import datetime, timezone
from unittest import mock

import botocore
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FQoGZXIvYXdzEXAMPLE//token+with/slashes="
TIMESTAMP = datetime(2026, 11, 30, 6, 5, 9, tzinfo=timezone.utc)
EMPTY = hashlib.sha256(b"").hexdigest()


def case(name, method, endpoint, bucket, key=None, query=(), headers=(), body=b"", region="us-east-1",
         token=None, unsigned=False):
    path = "/" + bucket
    if key is not None:
        path += "/" + percent_encode(key, safe="/~")
    request = AWSRequest(method=method, url=endpoint + path, data=body, params=list(query), headers=dict(headers))
    if unsigned:
        request.context["client_config"] = types.SimpleNamespace(s3={"payload_signing_enabled": False})
    signer = botocore.auth.S3SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "s3", region)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=TIMESTAMP.replace(tzinfo=None)):
        # add_auth, step by step, to capture the intermediate strings it logs.
        request.context["timestamp"] = TIMESTAMP.strftime(botocore.auth.SIGV4_TIMESTAMP)
        signer._modify_request_before_signing(request)
        canonical_request = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical_request)
        signer._inject_signature_to_request(request, signer.signature(string_to_sign, request))
    return {
        "name": name,
        "method": method,
        "endpoint": endpoint,
        "region": region,
        # The raw (unencoded) path the client asks for: "/bucket" or "/bucket/key".
        "path": "/" + bucket + ("" if key is None else "/" + key),
        "query": [[k, v] for k, v in query],
        "headers": [[k, v] for k, v in headers],
        "sessionToken": token,
        "payloadHash": request.headers["X-Amz-Content-SHA256"],
        "bodySHA256": hashlib.sha256(body).hexdigest(),
        "canonicalRequest": canonical_request,
        "stringToSign": string_to_sign,
        "authorization": request.headers["Authorization"],
        "signedHeaderValues": {k.lower(): v for k, v in request.headers.items()
                               if k.lower() in ("x-amz-date", "x-amz-content-sha256", "x-amz-security-token")},
        "source": "botocore " + botocore.__version__,
    }


LOCAL = "http://127.0.0.1:9000"
AWS = "https://s3.eu-west-1.amazonaws.com"
body = b"sealed segment bytes\n" * 50
md5 = __import__("base64").b64encode(hashlib.md5(body).digest()).decode()

cases = [
    case("get-object", "GET", LOCAL, "telex-archive", "topics/news/00000000000000000000.r0.log"),
    case("put-object-with-body", "PUT", LOCAL, "telex-archive", "topics/news/00000000000000000000.r0.log",
         headers=[("Content-MD5", md5), ("Content-Type", "application/octet-stream")], body=body),
    case("head-object", "HEAD", LOCAL, "telex-archive", "topics/news/00000000000000000000.manifest"),
    case("delete-object", "DELETE", LOCAL, "telex-archive", "topics/news/00000000000000000000.r1.log"),
    case("list-objects-v2", "GET", LOCAL, "telex-archive", query=[
        ("list-type", "2"), ("prefix", "archive/topics/"), ("max-keys", "2"),
        ("continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")]),
    case("key-with-spaces", "GET", LOCAL, "telex-archive", "topics/world news/a b  c.log"),
    case("key-with-reserved-characters", "PUT", LOCAL, "telex-archive", "k/a+b~c=d&e;f,g:h@i$j!(k)'*", body=b"x"),
    case("key-with-unicode", "GET", LOCAL, "telex-archive", "topics/nyheter/räksmörgås/日本語.log"),
    case("key-with-double-slash", "GET", LOCAL, "telex-archive", "prefix//topics///x.log"),
    case("session-token", "GET", AWS, "telex-archive", "topics/news/x.log", region="eu-west-1", token=SESSION_TOKEN),
    case("range-header", "GET", LOCAL, "telex-archive", "topics/news/00000000000000000000.r0.log",
         headers=[("Range", "bytes=8388608-16777215")]),
    case("non-default-port", "GET", "http://localhost:4566", "b12", "k"),
    case("https-default-port", "HEAD", "https://s3.us-east-1.amazonaws.com:443", "telex-archive", "k"),
    case("list-empty-prefix", "GET", LOCAL, "telex-archive", query=[("list-type", "2"), ("prefix", "")]),
    case("object-at-bucket-root", "GET", LOCAL, "telex-archive", "primary"),
    case("head-bucket", "HEAD", LOCAL, "telex-archive"),
    case("create-bucket", "PUT", AWS, "telex-archive", region="eu-west-1",
         body=b'<CreateBucketConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
              b'<LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>'),
    case("header-whitespace-and-case", "GET", LOCAL, "telex-archive", "k",
         headers=[("X-Amz-Meta-Title", "  Breaking    news:  two   spaces  "), ("X-AMZ-META-Desk", "World")]),
    case("unsigned-payload", "PUT", "https://s3.us-east-1.amazonaws.com", "telex-archive", "big.log",
         headers=[("Content-MD5", md5)], body=body, unsigned=True),
    case("query-needing-encoding", "GET", LOCAL, "telex-archive", query=[
        ("list-type", "2"), ("prefix", "topics/world news/é+x"), ("start-after", "a=b&c")]),
]

# AWS's published example (Amazon S3 API reference, "Signature Calculations for the Authorization Header:
# Transferring Payload in a Single Chunk", Example: GET Object): its own credentials, timestamp and virtual-hosted
# endpoint; AWS writes the Authorization header without a space after each comma.
aws_example = {
    "name": "aws-docs-get-object",
    "method": "GET",
    "endpoint": "https://examplebucket.s3.amazonaws.com",
    "region": "us-east-1",
    "path": "/test.txt",
    "query": [],
    "headers": [["Range", "bytes=0-9"]],
    "sessionToken": None,
    "accessKeyID": "AKIAIOSFODNN7EXAMPLE",
    "secretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "timestamp": "20130524T000000Z",
    "epochSeconds": 1369353600,
    "payloadHash": EMPTY,
    "bodySHA256": EMPTY,
    "canonicalRequest": "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n"
                        "x-amz-content-sha256:" + EMPTY + "\nx-amz-date:20130524T000000Z\n\n"
                        "host;range;x-amz-content-sha256;x-amz-date\n" + EMPTY,
    "stringToSign": "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
                    "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
    "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                     "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
                     "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    "signedHeaderValues": {"x-amz-date": "20130524T000000Z", "x-amz-content-sha256": EMPTY},
    "source": "AWS documentation",
}
assert hashlib.sha256(aws_example["canonicalRequest"].encode()).hexdigest() == aws_example["stringToSign"][-64:]
cases.append(aws_example)

out = {
    "accessKeyID": ACCESS_KEY,
    "secretAccessKey": SECRET_KEY,
    "timestamp": TIMESTAMP.strftime("%Y%m%dT%H%M%SZ"),
    "epochSeconds": int(TIMESTAMP.timestamp()),
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "TelexS3Tests", "Fixtures",
                    "sigv4-vectors.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")
