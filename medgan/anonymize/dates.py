"""Per-patient date shifting for the Retain Longitudinal Temporal Information (Modified Dates) option.

Every date of one patient moves by the same number of days, so intervals between studies,
ages at scan and the order of events survive, while the calendar dates do not. The offset is
keyed (HMAC of the patient key with the project secret): the same patient gets the same shift
in every file and every run, and it cannot be undone without the secret. Times of day are
kept: a whole-day shift does not change them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

__all__ = ["DUMMY_DATE", "patient_offset_days", "shift_da", "shift_dt"]

DUMMY_DATE = "19000101"  # used where a date cannot be parsed, so it cannot be shifted either


def patient_offset_days(secret: bytes, patient_key: str, max_shift_days: int = 3650) -> int:
    """A keyed offset in [-max_shift_days, -1] days: dates move into the past, never to zero shift."""
    if max_shift_days < 1:
        raise ValueError("max_shift_days must be at least 1")
    digest = hmac.new(secret, b"medgan-date-shift-v1\0" + patient_key.encode("utf-8", "replace"), hashlib.sha256)
    return -(1 + int.from_bytes(digest.digest()[:8], "big") % max_shift_days)


def _shift_date(text: str, offset_days: int) -> str:
    try:
        day = dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
        return (day + dt.timedelta(days=offset_days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):
        return DUMMY_DATE


def shift_da(value: str, offset_days: int) -> str:
    """Shift a DA value (one date, several separated by backslashes, or a range A-B)."""
    out = []
    for part in value.split("\\"):
        part = part.strip()
        if not part:
            out.append(part)
            continue
        ends = part.split("-")
        out.append("-".join(_shift_date(e, offset_days) if len(e) == 8 and e.isdigit() else "" for e in ends))
        if not any(ends) or any(e and not (len(e) == 8 and e.isdigit()) for e in ends):
            out[-1] = DUMMY_DATE  # unparseable: the original cannot be kept, and cannot be shifted
    return "\\".join(out)


def shift_dt(value: str, offset_days: int) -> str:
    """Shift the date part of a DT value (YYYYMMDD...), keeping the time and UTC offset."""
    out = []
    for part in value.split("\\"):
        part = part.strip()
        if not part:
            out.append(part)
        elif len(part) >= 8 and part[:8].isdigit():
            out.append(_shift_date(part[:8], offset_days) + part[8:])
        else:  # year or year-month only: too coarse to shift by days, and still the original
            out.append(DUMMY_DATE[: len(part)] if part.isdigit() else DUMMY_DATE)
    return "\\".join(out)
