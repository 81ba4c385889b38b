"""The de-identification passes over one pydicom dataset (no file I/O here).

`Deidentifier(policy)(ds)` applies PS3.15 Annex E to `ds` in place, at every nesting depth
and to the file meta, and returns what happened:

- each attribute gets its table action with the options applied (X remove, Z empty, D dummy
  valid for its VR, U keyed UID, K keep, C clean), combined codes resolved against the IOD;
  UI attributes the table does not list get the keyed UID too when they identify an instance
  (see `uids.is_instance_uid_attribute`);
- private attributes are removed unless allow-listed (Retain Safe Private); curves and whole
  overlay groups are removed (an overlay without its data would break the Overlay Plane module);
- PatientName/PatientID become the patient's pseudonym; dates are shifted per patient under
  Modified Dates; Clean Descriptors and the identifier sweep replace this patient's known
  identifiers in the text that is kept;
- the markers go in: PatientIdentityRemoved, DeidentificationMethod (+ code sequence, CID 7050),
  LongitudinalTemporalInformationModified.

Files whose pixels may carry burned-in text are quarantined (returned untouched) unless a
recipe region blanks them. A `Deidentifier` is built once per process; calling it is cheap.
Each element is read and written through `medgan.anonymize.elements`, which copes with damaged files.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from medgan import __version__
from medgan.anonymize import dates, iod
from medgan.anonymize.elements import (
    DUMMY_TEXT,
    TEXT_VRS,
    dummy_value,
    element_vr,
    garbled,
    items_of,
    map_values,
    set_element,
    text_of,
    untrusted,
)
from medgan.anonymize.identity import (
    CODED_VALUES,
    collect_identifiers,
    identifier_kind,
    identifiers_from,
    keyed_pseudonym,
    patient_key,
    scrubber_for,
)
from medgan.anonymize.pixels import blank_regions, burned_in_reason, matching_boxes
from medgan.anonymize.profile import OPTION_CODES, action_table
from medgan.anonymize.recipe import Policy
from medgan.anonymize.uids import UidMapper, is_instance_uid_attribute

__all__ = ["CorruptValue", "Deidentifier", "NestingTooDeep", "Outcome", "PatientNotMapped"]

_FREE_TEXT_VRS = frozenset({"LT", "PN", "ST", "UT"})  # replaced inside a D sequence: names and prose
_META_REMOVED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)  # sender AE titles, private info
_PATIENT_NAME, _PATIENT_ID = 0x00100010, 0x00100020
_TYPE_DEPENDENT = ("X", "Z")  # and every combined code: resolved against the IOD (see iod.py)
_MAX_DEPTH = 64  # deeper nesting is refused rather than risk the interpreter's recursion limit


class PatientNotMapped(Exception):
    """The recipe's mapping CSV does not name this patient and unmapped_patients is "fail"."""


class CorruptValue(Exception):
    """A kept value that cannot be what its VR says (e.g. a damaged length swallowed later elements)."""


class NestingTooDeep(Exception):
    """Sequences nested deeper than medgan walks."""


@dataclass
class Outcome:
    """What happened to one dataset."""

    status: str  # "ok" or "quarantined"
    reason: str = ""
    patient: str = ""  # the pseudonym
    study_uid: str = ""  # new UIDs, for the output layout
    series_uid: str = ""
    sop_uid: str = ""
    pixels_blanked: bool = False


@dataclass
class _Context:
    iod: str | None
    date_offset_days: int | None
    identifiers: set[str]  # gathered while walking, from the values about to be removed or replaced
    kept_text: list[tuple[Dataset, int]]  # text kept as it is: swept for identifiers afterwards
    clean_text: list[tuple[Dataset, int]]  # text the profile says to clean (C): scrubbed afterwards


class Deidentifier:
    """Applies one policy; holds the action table and UID mapper (one per process)."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self.actions = action_table(policy.columns)
        self.uids = UidMapper(policy.secret)
        self.retain_uids = "RetainUIDs" in policy.columns
        self.codes = ["BasicProfile", *[c for c in OPTION_CODES if c in policy.columns]]

    def __call__(self, ds: Dataset) -> Outcome:
        policy = self.policy
        boxes = matching_boxes(ds, policy.pixel_regions)
        reason = burned_in_reason(ds, policy.burned_in_modalities)
        if reason and not boxes and policy.quarantine_burned_in:
            return Outcome("quarantined", reason)
        key = patient_key(ds)
        pseudonym = self._pseudonym(ds, key)
        offset = None
        if policy.retain_longitudinal == "modified":
            offset = dates.patient_offset_days(policy.secret, key, policy.max_date_shift_days)
        sop_class = str(ds.get("SOPClassUID", "") or "")
        ctx = _Context(iod.iod_for(sop_class), offset, set(), [], [])
        self._walk(ds, (), ctx, dummy=False, depth=0)
        # Text is scrubbed after the walk, once every identifier in the file is known (StudyDescription
        # comes before PatientName in tag order).
        scrubber = scrubber_for(frozenset(ctx.identifiers))
        if not scrubber.empty:
            self._scrub(ctx.clean_text, scrubber)
            if policy.sweep_identifiers:
                self._scrub(ctx.kept_text, scrubber)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            self._clean_meta(meta)
        ds[_PATIENT_NAME] = DataElement(_PATIENT_NAME, "PN", pseudonym)
        ds[_PATIENT_ID] = DataElement(_PATIENT_ID, "LO", pseudonym)
        if boxes:
            blank_regions(ds, boxes)
        self._mark(ds, pixels_blanked=bool(boxes))
        return Outcome(
            "ok",
            patient=pseudonym,
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
            sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
            pixels_blanked=bool(boxes),
        )

    def _pseudonym(self, ds: Dataset, key: str) -> str:
        policy = self.policy
        if policy.mapping:
            pid = str(ds.get("PatientID", "") or "").strip()
            if pid in policy.mapping:
                return policy.mapping[pid]
            if policy.unmapped_patients == "fail":
                raise PatientNotMapped("patient not in the mapping CSV")
        return keyed_pseudonym(policy.secret, key, policy.pseudonym_prefix)

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, ds: Dataset, path: tuple[str, ...], ctx: _Context, dummy: bool, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise NestingTooDeep(f"sequences nested deeper than {_MAX_DEPTH} levels")
        private_seen = False
        for tag in list(ds.keys()):
            group = tag >> 16
            if group & 1:
                private_seen = True
                continue
            if not tag & 0xFFFF or 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
                # Group lengths (retired, wrong after edits), curves, and whole overlay groups.
                del ds[tag]
                continue
            code = self.actions.get(tag)
            vr = element_vr(ds, tag)
            if code is None and untrusted(tag, vr):
                del ds[tag]  # an unknown public tag, or one whose VR contradicts the dictionary: unsafe to keep
                continue
            if code is None or code == "K":
                if garbled(ds, tag, vr):
                    raise CorruptValue(f"{keyword_for_tag(tag) or f'({tag >> 16:04X},{tag & 0xFFFF:04X})'} holds "
                                       "bytes that are not text (a damaged length?)")  # fmt: skip
                if vr == "SQ":
                    self._walk_items(ds, tag, path, ctx, dummy, depth)
                elif dummy and vr in _FREE_TEXT_VRS:
                    set_element(ds, tag, vr, DUMMY_TEXT)
                elif vr in TEXT_VRS and tag not in CODED_VALUES:
                    ctx.kept_text.append((ds, tag))
                elif vr == "UI" and code is None and not self.retain_uids and is_instance_uid_attribute(tag):
                    # An instance UID the table does not list: the same keyed UID as where it is listed.
                    set_element(ds, tag, vr, map_values(ds[tag].value, self.uids))
                continue
            if code in _TYPE_DEPENDENT or "/" in code:
                code = iod.resolve(code, iod.required_type(ctx.iod, path, keyword_for_tag(tag)))
            if code != "U":
                kind = identifier_kind(tag, vr)
                if kind is not None:
                    ctx.identifiers |= identifiers_from(kind, text_of(ds, tag))
            self._apply(ds, tag, vr, code, path, ctx, dummy, depth)
        if private_seen:
            self._private(ds)

    def _walk_items(self, ds: Dataset, tag: int, path: tuple[str, ...], ctx: _Context, dummy: bool, depth: int):
        items = ds[tag].value
        if not isinstance(items, Sequence):  # a wrong VR: not items at all
            set_element(ds, tag, "SQ", [])
            return
        child = (*path, keyword_for_tag(tag) or f"{tag:08X}")
        for item in items:
            self._walk(item, child, ctx, dummy, depth + 1)

    def _apply(self, ds, tag, vr, code, path, ctx: _Context, dummy: bool, depth: int) -> None:
        if code == "X":
            if vr == "SQ":  # names and IDs inside (OtherPatientIDsSequence...) may recur in kept text
                for item in items_of(ds, tag):
                    ctx.identifiers |= collect_identifiers(item, self.actions)
            del ds[tag]
        elif code == "Z":
            set_element(ds, tag, vr, [] if vr == "SQ" else None)
        elif code == "U" and vr == "SQ":
            self._walk_items(ds, tag, path, ctx, dummy, depth)  # X/Z/U* kept: its UIDs follow their rows
        elif code in ("U", "D") and vr == "UI":
            if self.retain_uids:
                return
            set_element(ds, tag, vr, map_values(ds[tag].value, self.uids))
        elif code == "D":
            if vr == "SQ":  # a dummy sequence: same items, every value in them de-identified
                self._walk_items(ds, tag, path, ctx, True, depth)
            else:
                set_element(ds, tag, vr, dummy_value(vr))
        elif code == "C":
            self._clean(ds, tag, vr, path, ctx, dummy, depth)
        else:  # U on a non-UI element (a wrong VR): its value is still an identifier
            set_element(ds, tag, vr, dummy_value(vr))

    def _clean(self, ds, tag, vr, path, ctx: _Context, dummy: bool, depth: int) -> None:
        """C: replace with values of similar meaning that do not identify."""
        if vr == "SQ":
            self._walk_items(ds, tag, path, ctx, dummy, depth)
        elif vr in ("DA", "DT") and ctx.date_offset_days is not None:
            shift = dates.shift_da if vr == "DA" else dates.shift_dt
            set_element(ds, tag, vr, map_values(ds[tag].value, lambda v: shift(str(v), ctx.date_offset_days)))
        elif vr == "TM":
            return  # a whole-day shift leaves the time of day as it was
        elif vr == "AE":
            value = str(ds[tag].value or "")
            set_element(ds, tag, vr, keyed_pseudonym(self.policy.secret, "ae:" + value, "AE", 12) if value else None)
        elif vr in TEXT_VRS:
            ctx.clean_text.append((ds, tag))
        else:  # binary notes (MakerNote...) cannot be read for identifiers: remove them
            del ds[tag]

    def _private(self, ds: Dataset) -> None:
        """Remove private attributes, keeping only allow-listed ones (and their creators)."""
        allowed = self.policy.safe_private if "RetainSafePrivate" in self.policy.columns else frozenset()
        kept_blocks: set[tuple[int, int]] = set()
        creators: dict[tuple[int, int], str] = {}
        private = [tag for tag in ds.keys() if (tag >> 16) & 1]  # noqa: SIM118  iterating a Dataset yields elements
        if allowed:
            creators = {
                (tag >> 16, tag & 0xFF): str(ds[tag].value or "").strip()
                for tag in private
                if 0x10 <= tag & 0xFFFF <= 0xFF
            }
            for tag in private:
                group, element = tag >> 16, tag & 0xFFFF
                block = element >> 8
                if block >= 0x10 and (creators.get((group, block), ""), group, element & 0xFF) in allowed:
                    kept_blocks.add((group, block))
        for tag in private:
            group, element = tag >> 16, tag & 0xFFFF
            if element >= 0x1000 and (group, element >> 8) in kept_blocks:
                if (creators.get((group, element >> 8), ""), group, element & 0xFF) in allowed:
                    continue
            elif 0x10 <= element <= 0xFF and (group, element) in kept_blocks:
                continue
            del ds[tag]

    @staticmethod
    def _scrub(targets: list[tuple[Dataset, int]], scrubber) -> None:
        """Replace the identifiers wherever they occur in these text elements."""
        for ds, tag in targets:
            raw = ds.get_item(tag)
            value = getattr(raw, "value", None)
            if isinstance(value, bytes) and not scrubber.may_match(value):
                continue  # not decoded at all: most kept text never holds an identifier
            element = ds[tag]
            if element.value is None:
                continue
            new = map_values(element.value, lambda v: scrubber.scrub(str(v)))
            if new != element.value:
                set_element(ds, tag, element.VR, new)

    def _clean_meta(self, meta: Dataset) -> None:
        for tag in _META_REMOVED:
            if tag in meta:
                del meta[tag]
        # The file is written by medgan (with pydicom), not by the implementation that wrote the input,
        # whose UID can also be the input's InstanceCreatorUID (DCMTK does that).
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"MEDGAN_{__version__}"[:16]
        if self.retain_uids:
            return
        for tag in list(meta.keys()):  # MediaStorageSOPInstanceUID, RTVCommunicationSOPInstanceUID
            if is_instance_uid_attribute(tag) and meta[tag].value:
                set_element(meta, tag, "UI", map_values(meta[tag].value, self.uids))

    def _mark(self, ds: Dataset, pixels_blanked: bool) -> None:
        codes = [*self.codes, "CleanPixelData"] if pixels_blanked else self.codes
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = [OPTION_CODES[c][1] for c in codes] + [f"medgan {__version__}"]
        items = []
        for name in codes:
            item = Dataset()
            item.CodeValue, item.CodeMeaning = OPTION_CODES[name]
            item.CodingSchemeDesignator = "DCM"
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items
        longitudinal = self.policy.retain_longitudinal
        ds.LongitudinalTemporalInformationModified = {"full": "UNMODIFIED", "modified": "MODIFIED"}.get(
            longitudinal, "REMOVED"
        )
        if pixels_blanked:
            ds.BurnedInAnnotation = "NO"
