"""Schemathesis hooks for the reader's OpenAPI document (`/openapi.json`).

The document gives strkeys a pattern and a custom format: no pattern can state their
CRC-16 checksum, so a value drawn from the pattern alone is refused with 400 (correctly:
it is a mistyped id). This module teaches schemathesis the two formats, generating
strkeys with valid checksums (SEP-23) and, when the test passes them in
`READER_KNOWN_ADDRESSES` / `READER_KNOWN_ASSETS`, the addresses and assets that have
history, so that generated requests also return full pages whose records are checked
against the response schemas.
"""

import base64
import binascii
import os

import schemathesis
from hypothesis import strategies as st

# SEP-23 version bytes.
ACCOUNT = 6 << 3  # G...
CONTRACT = 2 << 3  # C...


def strkey(version: int, payload: bytes) -> str:
    """Encodes a strkey: base-32 of version byte, payload and CRC-16/XMODEM (little endian)."""
    body = bytes([version]) + payload
    checksum = binascii.crc_hqx(body, 0).to_bytes(2, "little")
    return base64.b32encode(body + checksum).decode("ascii")


def known(variable: str) -> list[str]:
    return [v for v in os.environ.get(variable, "").split(",") if v]


keys = st.binary(min_size=32, max_size=32)
accounts = keys.map(lambda k: strkey(ACCOUNT, k))
contracts = keys.map(lambda k: strkey(CONTRACT, k))
codes = st.from_regex(r"\A[A-Za-z0-9]{1,12}\Z")

addresses = accounts | contracts
assets = st.just("native") | st.builds(lambda code, issuer: f"{code}:{issuer}", codes, accounts)
if known("READER_KNOWN_ADDRESSES"):
    addresses = st.sampled_from(known("READER_KNOWN_ADDRESSES")) | addresses
if known("READER_KNOWN_ASSETS"):
    assets = st.sampled_from(known("READER_KNOWN_ASSETS")) | assets

schemathesis.openapi.format("stellar-address", addresses)
schemathesis.openapi.format("stellar-asset", assets)
