#!/usr/bin/env python3
"""One PAP Access-Request (or Status-Server) to Tessera with pyrad, an independent RADIUS
client library, and a strict check of the reply.

Usage: pyrad_client.py HOST PORT SECRET USER PASSWORD [--ma] [--status]

Prints one word on stdout: accept, reject or timeout. Exits 3 if a reply arrived that fails
verification: wrong Response Authenticator, missing or wrong Message-Authenticator, or
Message-Authenticator not the first attribute (the BlastRADIUS defence). The reply is
checked twice: by pyrad's own VerifyReply(enforce_ma=True) and by hand (RFC 2865 §3,
RFC 3579 §3.2) with hashlib/hmac, so a bug in either check cannot hide a bad reply.
"""

import hashlib
import hmac
import io
import socket
import sys

from pyrad import packet
from pyrad.dictionary import Dictionary

DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Message-Authenticator 80 octets
"""


def fail(why):
    print(f"verification failed: {why}", file=sys.stderr)
    sys.exit(3)


def check_by_hand(raw, request_authenticator, secret):
    """Response Authenticator and Message-Authenticator, computed independently of pyrad."""
    if len(raw) < 20 or int.from_bytes(raw[2:4], "big") != len(raw):
        fail("length field")
    with_request_auth = raw[:4] + request_authenticator + raw[20:]
    expected = hashlib.md5(with_request_auth + secret).digest()
    if not hmac.compare_digest(expected, raw[4:20]):
        fail("Response Authenticator")
    if len(raw) < 38 or raw[20] != 80 or raw[21] != 18:
        fail("Message-Authenticator is not the first attribute")
    zeroed = with_request_auth[:22] + bytes(16) + with_request_auth[38:]
    ma = hmac.new(secret, zeroed, hashlib.md5).digest()
    if not hmac.compare_digest(ma, raw[22:38]):
        fail("Message-Authenticator")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    host, port, secret, user, password = args
    secret = secret.encode()
    dictionary = Dictionary(io.StringIO(DICTIONARY))
    if "--status" in flags:
        request = packet.AuthPacket(code=packet.StatusServer, secret=secret, dict=dictionary)
        request.add_message_authenticator()
    else:
        request = packet.AuthPacket(code=packet.AccessRequest, secret=secret, dict=dictionary)
        request["User-Name"] = user
        request["User-Password"] = request.PwCrypt(password)
        request["NAS-Identifier"] = "pyrad-e2e"
        if "--ma" in flags:
            request.add_message_authenticator()
    raw_request = request.RequestPacket()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.5)
    for _ in range(3):
        sock.sendto(raw_request, (host, int(port)))
        try:
            raw, _ = sock.recvfrom(4096)
            break
        except socket.timeout:
            continue
    else:
        print("timeout")
        return
    reply = packet.Packet(packet=raw, secret=secret, dict=dictionary)
    if not request.VerifyReply(reply, raw, enforce_ma=True):
        fail("pyrad VerifyReply")
    check_by_hand(raw, request.authenticator, secret)
    print({packet.AccessAccept: "accept", packet.AccessReject: "reject"}.get(reply.code, f"code {reply.code}"))


if __name__ == "__main__":
    main()
