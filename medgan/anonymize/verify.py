"""`medgan phi-scan`: check a de-identified tree against the profile, and optionally the originals.

Without originals it reports, per file and at any depth: attributes the profile says to
remove that are present, attributes it says to empty that hold a value, UIDs it says to
replace (and instance UIDs in UI attributes it does not list) that are not 2.25 UIDs,
private attributes (unless the file says Retain Safe Private), curves and overlays, and
missing markers. The options a file was de-identified with are read
from its own DeidentificationMethodCodeSequence. With `--original`, every value that the
profile says must go (non-K attributes and private ones, at any depth) is indexed by tag,
along with the names and IDs of the patients; a finding is any such value still held by the
same attribute, any instance UID of the originals (in whatever UI attribute) still present
unless the file says Retain UIDs, or any such name or ID appearing in any text of the output.

Findings name the file, the attribute and the problem, never the value.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset

from medgan.anonymize import iod
from medgan.anonymize.batch import REPORT_NAME, WORK_DIR
from medgan.anonymize.elements import TEXT_VRS
from medgan.anonymize.identity import CODED_VALUES, IdentifierScrubber, collect_identifiers, scrubber_for
from medgan.anonymize.nifti import TEXT_FIELDS, header_class, open_nifti, sidecar_key_kept
from medgan.anonymize.profile import OPTION_CODES, action_table, load_profile
from medgan.anonymize.quiet import quiet_pydicom
from medgan.anonymize.uids import UidMapper, is_instance_uid_attribute
from medgan.errors import InputError
from medgan.io.walk import walk_tree

__all__ = ["Finding", "phi_scan"]

_CODE_TO_COLUMN = {code: name for name, (code, _) in OPTION_CODES.items()}
_PSEUDONYMS = {0x00100010, 0x00100020}


@dataclass(frozen=True)
class Finding:
    """One problem in one output file."""

    path: str  # relative to the scanned folder
    kind: str  # attribute, private, marker, original-value, original-identifier, unreadable, nifti
    where: str  # keyword and tag, or a header field / JSON key
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.where}: {self.detail}"


def _files(folder: str) -> Iterator[str]:
    """Every file under `folder`, hidden ones included, symbolic links followed; only the work
    folder of an anonymize output and the report.csv next to it (or at the top) are skipped."""
    if os.path.isfile(folder):
        yield folder
        return
    for root, names in walk_tree(folder, _work_folder):
        report_here = root == folder or os.path.isdir(os.path.join(root, WORK_DIR))
        for name in names:
            if not (report_here and name == REPORT_NAME):
                yield os.path.join(root, name)


def _work_folder(parent: str, name: str) -> bool:
    return name == WORK_DIR


def _where(tag: int) -> str:
    return f"{keyword_for_tag(tag) or 'private'} ({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _iter_elements(ds: Dataset, path: tuple[str, ...] = ()):
    for element in ds:
        yield element, path
        if element.VR == "SQ":
            for item in element.value or []:
                yield from _iter_elements(item, (*path, element.keyword or f"{int(element.tag):08X}"))


class _Originals:
    """What the originals say must not survive: values by tag, and each original's names and IDs.

    An output is linked to its original to search only that patient's names and IDs (a surname
    can be an ordinary word in another file): by SOP Instance UID (mapped with the secret when
    one is given, as is for Retain UIDs), else by the pixel data, which medgan copies unchanged.
    An output linked to nothing is searched for the names and IDs of all the originals.
    """

    def __init__(self, folder: str, secret: bytes | None = None):
        basic = action_table(frozenset())
        profile = load_profile()
        mapper = UidMapper(secret) if secret else None
        self.values: dict[int, set[str]] = defaultdict(set)
        self.uids: set[str] = set()  # instance UIDs of the originals, whatever attribute held them
        self.links: dict[str, set[str]] = defaultdict(set)  # uid: or pixels: key -> identifiers
        everyone: set[str] = set()
        found = False
        for path in _files(folder):
            found = True
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:
                continue
            identifiers = collect_identifiers(ds, basic)
            everyone |= identifiers
            for key in _link_keys(ds, mapper):
                self.links[key] |= identifiers
            for part in (getattr(ds, "file_meta", None), ds):
                for element, _ in _iter_elements(part) if part is not None else ():
                    tag = int(element.tag)
                    rule = profile.rule_for(tag)
                    if (tag >> 16) & 1 or (rule is not None and rule.basic != "K"):
                        self.values[tag].update(_values(element))
                    if element.VR == "UI" and (is_instance_uid_attribute(tag) or (rule and rule.basic == "U")):
                        # A placeholder such as "0" is no one's UID and may stand in any attribute.
                        self.uids.update(v for v in _values(element) if v.count(".") >= 2)
        if not found:
            raise InputError("holds no files (the originals to compare with)", path=folder)
        self.everyone = frozenset(everyone)

    def scrubber(self, output: Dataset) -> IdentifierScrubber:
        linked = [self.links[k] for k in _link_keys(output, None) if k in self.links]
        return scrubber_for(frozenset().union(*linked) if linked else self.everyone)


def _link_keys(ds: Dataset, mapper: UidMapper | None) -> list[str]:
    keys = []
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if uid:
        keys.append("uid:" + uid)
        if mapper is not None:
            keys.append("uid:" + mapper(uid))
    pixels = ds.get_item(0x7FE00010)
    value = getattr(pixels, "value", None)
    if isinstance(value, bytes) and len(value) >= 64:
        keys.append("pixels:" + hashlib.sha256(value).hexdigest())
    return keys


def _values(element) -> list[str]:
    try:
        value = element.value
    except Exception:
        return []
    if value is None or element.VR == "SQ" or isinstance(value, bytes | bytearray):
        return []
    items = value if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    texts = [str(v).strip() for v in items]
    return [t for t in texts if t and not t.startswith("1.2.840.10008.")]


def _scan_dicom(ds: Dataset, name: str, originals: _Originals | None) -> list[Finding]:
    findings = []
    codes = {str(item.get("CodeValue", "")) for item in ds.get("DeidentificationMethodCodeSequence", [])}
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        findings.append(Finding(name, "marker", _where(0x00120062), "missing or not YES"))
    if not ds.get("DeidentificationMethod"):
        findings.append(Finding(name, "marker", _where(0x00120063), "missing"))
    if "113100" not in codes:
        findings.append(Finding(name, "marker", _where(0x00120064), "missing the Basic Profile code 113100"))
    columns = frozenset(_CODE_TO_COLUMN[c] for c in codes if c in _CODE_TO_COLUMN) - {"BasicProfile"}
    actions = action_table(columns)
    iod_name = iod.iod_for(str(ds.get("SOPClassUID", "")))
    scrubber = originals.scrubber(ds) if originals is not None else None
    for part in (getattr(ds, "file_meta", None), ds):
        for element, path in _iter_elements(part) if part is not None else ():
            tag = int(element.tag)
            findings += _check_element(element, tag, path, actions, columns, iod_name, name)
            if originals is not None:
                findings += _check_original(element, tag, path, actions, columns, name, originals, scrubber)
    return findings


def _check_element(element, tag, path, actions, columns, iod_name, name) -> list[Finding]:
    group = tag >> 16
    if group & 1:
        if "RetainSafePrivate" in columns:
            return []
        return [Finding(name, "private", _where(tag), "private attribute present")]
    if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
        return [Finding(name, "attribute", _where(tag), "curve or overlay present")]
    code = actions.get(tag)
    if code is None and element.VR == "UI" and "RetainUIDs" not in columns and is_instance_uid_attribute(tag):
        code = "U"  # an instance UID that the table does not list: replaced all the same
    if code is None or code in ("K", "C", "D"):
        return []
    if code in ("X", "Z") or "/" in code:
        code = iod.resolve(code, iod.required_type(iod_name, path, keyword_for_tag(tag)))
    if code == "D":
        return []
    if code == "X":
        return [Finding(name, "attribute", _where(tag), "present; the profile says remove")]
    empty = element.value in (None, "", b"") or (element.VR == "SQ" and not element.value)
    if code == "Z" and not empty and not (tag in _PSEUDONYMS and not path):
        return [Finding(name, "attribute", _where(tag), "holds a value; the profile says empty")]
    if code == "U" and element.VR == "UI" and not empty and any(not v.startswith("2.25.") for v in _values(element)):
        return [Finding(name, "attribute", _where(tag), "UID not replaced (not a 2.25 UID)")]
    return []


def _check_original(element, tag, path, actions, columns, name, originals: _Originals, scrubber) -> list[Finding]:
    found = []
    must_go = actions.get(tag) not in ("K", "C") or (tag >> 16) & 1
    if must_go and set(_values(element)) & originals.values.get(tag, set()):
        found.append(Finding(name, "original-value", _where(tag), "still holds its original value"))
    elif element.VR == "UI" and "RetainUIDs" not in columns and set(_values(element)) & originals.uids:
        found.append(Finding(name, "original-uid", _where(tag), "holds an instance UID of the originals"))
    searched = element.VR in TEXT_VRS and not (tag in _PSEUDONYMS and not path) and tag not in CODED_VALUES
    searched = searched and not scrubber.empty
    if searched and any(scrubber.scrub(v) != v for v in _values(element)):
        found.append(Finding(name, "original-identifier", _where(tag), "contains a name or ID of the originals"))
    return found


def _scan_nifti(path: str, name: str) -> list[Finding]:
    with open_nifti(path, "rb") as fh:
        klass = header_class(fh.read(4))
        fh.seek(0)
        header = klass.from_fileobj(fh, check=False)
    findings = [
        Finding(name, "nifti", field, "not empty")
        for field in TEXT_FIELDS
        if field in header and bytes(header[field]).strip(b"\0 ")
    ]
    if len(header.extensions):
        findings.append(Finding(name, "nifti", "extensions", f"{len(header.extensions)} header extension(s)"))
    return findings


def _scan_json(path: str, name: str) -> list[Finding]:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    actions = action_table(frozenset())
    findings = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if not sidecar_key_kept(str(key), actions):
                    findings.append(Finding(name, "nifti", f"JSON key {key}", "identifying key present"))
                walk(value)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    return findings


def phi_scan(folder: str, original: str | None = None, secret: bytes | None = None) -> tuple[list[Finding], int]:
    """Scan every file under `folder` (and index `original`; `secret` links outputs to originals
    by their mapped UIDs); returns (findings, number of files scanned)."""
    with quiet_pydicom():
        return _scan_all(folder, _Originals(original, secret) if original else None)


def _scan_all(folder: str, originals: _Originals | None) -> tuple[list[Finding], int]:
    findings: list[Finding] = []
    scanned = 0
    if not os.path.exists(folder):
        raise InputError("no such file or folder", path=folder)
    for path in _files(folder):
        name = os.path.relpath(path, folder) if os.path.isdir(folder) else os.path.basename(path)
        scanned += 1
        try:
            if path.endswith((".nii", ".nii.gz")):
                findings += _scan_nifti(path, name)
            elif path.endswith(".json"):
                findings += _scan_json(path, name)
            else:
                ds = pydicom.dcmread(path, force=True)
                findings += _scan_dicom(ds, name, originals)
        except Exception as err:
            findings.append(Finding(name, "unreadable", "file", f"cannot be read ({err.__class__.__name__})"))
    if not scanned:
        raise InputError("holds no files to scan", path=folder)
    return findings, scanned
