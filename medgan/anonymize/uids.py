"""Keyed UID replacement: the same original UID maps to the same new UID for the same secret.

New UIDs are 2.25 UIDs (PS3.5 B.2: a UUID written as one decimal integer). The UUID is the
first 128 bits of HMAC-SHA256(secret, original UID) with the RFC 9562 version-8 ("custom")
and variant bits set, so it is a well-formed UUID and no one without the secret can compute
or invert the mapping. Because the mapping is a pure function of (secret, UID), references
stay consistent across files, studies, runs and worker processes without any shared state.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["UidMapper", "is_standard_uid"]

DICOM_ROOT = "1.2.840.10008."  # UIDs the standard itself defines (SOP Classes, transfer syntaxes, ...)


def is_standard_uid(uid: str) -> bool:
    """True for UIDs defined by DICOM (well-known instances such as palettes included): never remapped."""
    return uid.startswith(DICOM_ROOT)


class UidMapper:
    """Callable mapping original UID -> new 2.25 UID, memoised (a series repeats its UIDs)."""

    def __init__(self, secret: bytes, cache_limit: int = 100_000):
        self._key = hmac.new(secret, b"medgan-uid-v1", hashlib.sha256).digest()
        self._cache: dict[str, str] = {}
        self._cache_limit = cache_limit  # bounds memory in long-running workers

    def __call__(self, uid: str) -> str:
        uid = uid.strip().rstrip("\0").strip()
        if not uid or is_standard_uid(uid):
            return uid
        found = self._cache.get(uid)
        if found is not None:
            return found
        digest = bytearray(hmac.new(self._key, uid.encode("ascii", "replace"), hashlib.sha256).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # version 8
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC variant
        new = "2.25." + str(int.from_bytes(digest, "big"))
        if len(self._cache) >= self._cache_limit:
            self._cache.clear()
        self._cache[uid] = new
        return new
