#!/usr/bin/python3
"""status.py — call the loader's GetStatus from Python's gRPC (Debian's
python3-grpcio, the C-core implementation), as a user's own client would.

Usage:
  status.py TARGET [--ca CA.pem] [--cert CERT.pem --key KEY.pem] [--server-name NAME]

No --ca: plaintext. Prints "ok BYTES" (the size of the response) and exits 0,
or "error CODE DETAILS" and exits 1. The request and response are left as
raw bytes: an empty GetStatusRequest is empty on the wire, so the client
needs no generated code.
"""
import argparse
import sys

import grpc


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--server-name")
    a = p.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    if a.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read(a.ca),
            private_key=read(a.key) if a.key else None,
            certificate_chain=read(a.cert) if a.cert else None,
        )
        options = [("grpc.ssl_target_name_override", a.server_name)] if a.server_name else []
        channel = grpc.secure_channel(a.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(a.target)
    call = channel.unary_unary("/filewatcher.v1.EventService/GetStatus")
    try:
        response = call(b"", timeout=5)
    except grpc.RpcError as e:
        print("error", e.code().name, e.details())
        return 1
    print("ok", len(response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
