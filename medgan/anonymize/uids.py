"""Keyed UID replacement: the same original UID maps to the same new UID for the same secret.

New UIDs are 2.25 UIDs (PS3.5 B.2: a UUID written as one decimal integer). The UUID is the
first 128 bits of HMAC-SHA256(secret, original UID) with the RFC 9562 version-8 ("custom")
and variant bits set, so it is a well-formed UUID and no one without the secret can compute
or invert the mapping. Because the mapping is a pure function of (secret, UID), references
stay consistent across files, studies, runs and worker processes without any shared state.

Which UIDs are replaced: those of the attributes Table E.1-1 marks U, and the values of every
other public UI attribute that identifies an instance (`is_instance_uid_attribute`): an image, a
concatenation, a frame of reference, an event, an assertion... The table does not list them all
(TargetFrameOfReferenceUID, SOPInstanceUIDOfConcatenationSource...), yet they hold the same
identifiers, and a reference must follow what it refers to. Not replaced: UI attributes that name
a definition shared by many instances rather than an instance (SOP classes, transfer syntaxes,
coding schemes, context groups, templates, mapping resources, implementations and their software
versions), and well-known UIDs in any attribute (under the DICOM root or in pydicom's registry).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.uid import UID_dictionary

__all__ = ["UidMapper", "is_instance_uid_attribute", "is_standard_uid"]

DICOM_ROOT = "1.2.840.10008."  # UIDs the standard itself defines (SOP Classes, transfer syntaxes, ...)
# Keywords of UI attributes that identify a definition, not an instance (see the module docstring).
_DEFINITION_KEYWORD = re.compile(
    r"Class|Syntax|CodingScheme|ContextUID|ContextGroupExtensionCreatorUID|MappingResource|TemplateUID"
    r"|CreatorVersionUID|PrivateInformationCreatorUID"
)


def is_standard_uid(uid: str) -> bool:
    """True for UIDs defined by DICOM (well-known instances such as palettes included): never remapped."""
    return uid.startswith(DICOM_ROOT) or uid in UID_dictionary


@lru_cache(maxsize=4096)
def is_instance_uid_attribute(tag: int) -> bool:
    """True for a public attribute of VR UI whose values identify instances (see the module docstring)."""
    if (tag >> 16) & 1:
        return False
    try:
        if dictionary_VR(tag) != "UI":
            return False
    except KeyError:
        return False
    keyword = keyword_for_tag(tag)
    return bool(keyword) and not _DEFINITION_KEYWORD.search(keyword)


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
