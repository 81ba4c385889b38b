"""What every DICOM output layout shares: the checked, encoded image and the header (`plan_series`).

`medgan.io.dicom_write` (one file per slice) and `medgan.io.dicom_multiframe` (one Enhanced
CT/MR file) both start from a `SeriesPlan`, so they describe an image alike:

* new Study/Series/Frame of Reference UIDs; SyntheticData YES for generated images, NO otherwise;
* a coded (`derivation_code`) and a free-text derivation built from medgan's own records, never
  from file names, and a ContributingEquipmentSequence naming medgan as synthesizing or
  processing equipment;
* the source's patient identity (and its free-text descriptions, which PS3.15 Annex E treats as
  identifying) only with `copy_patient=True`;
* when the image was read from DICOM, the source instances it came from: slice by slice while the
  slice count still matches the source's, else every source for every slice;
* `same_study=True` (a derived series that belongs beside its source, e.g. an enhanced scan): the
  source's StudyInstanceUID and FrameOfReferenceUID (the same patient, the same patient coordinates)
  instead of new ones, the study's date left empty unless the patient identity is copied.

Pixels are encoded once here (`medgan.io.dicom_encode`): values in physical units go through
RescaleSlope/Intercept, exactly for integer data and to half a quantisation step for real data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

import medgan
from medgan.errors import OutputError
from medgan.io.dicom_encode import (
    PixelEncoding,
    SliceGeometry,
    code_item,
    display_window,
    encode_pixels,
    slice_geometry,
)
from medgan.io.image import affine_of, array_of, meta_of

__all__ = ["MODALITIES", "SeriesPlan", "SourceRef", "derivation_code", "plan_series"]

MODALITIES = ("CT", "MR")  # the image IODs medgan writes, in both layouts
_PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge")
# CID 7203 (Image Derivation) is extensible and has no concept for images made or changed by a
# network; a wrong member (e.g. "Volume editing") would mislead, so two general DCM concepts.
_DERIVATION_CODES = {
    True: ("123110", "DCM", "Artificial Intelligence"),
    False: ("110001", "DCM", "Image Processing"),
}
_EQUIPMENT_PURPOSE = {  # CID 7005 Contributing Equipment Purposes of Reference
    True: ("109100", "DCM", "Synthesizing Equipment"),
    False: ("109102", "DCM", "Processing Equipment"),
}

SourceRef = tuple[str, str, int | None]  # (SOP class, SOP instance, frame number or None)


@dataclass
class SeriesPlan:
    """Everything both layouts need: stored pixels, geometry and the shared header."""

    modality: str
    stored: np.ndarray  # (i, j, k) stored integers
    encoding: PixelEncoding
    geometry: SliceGeometry
    synthetic: bool
    by_network: bool  # a network made the pixels (derivation "Artificial Intelligence"); else "Image Processing"
    header: Dataset  # patient, study, series, frame of reference, equipment, SOP common
    all_sources: list[SourceRef]  # every DICOM frame the image came from; empty without a DICOM source
    slice_sources: list[list[SourceRef]] | None  # per output slice; None once the slice count changed
    source_study_uid: str | None  # where the sources live (for the evidence and instance references)
    source_series_uid: str | None
    derivation_description: str
    window: tuple[float, float]  # (centre, width) in physical units
    content_date_time: tuple[str, str]  # (DA, TM) of this write

    @property
    def n_slices(self) -> int:
        return int(self.stored.shape[2])

    @property
    def has_sources(self) -> bool:
        return bool(self.all_sources)

    def sources_of(self, k: int) -> list[SourceRef]:
        """The source frames of slice `k`: its own when known, else all of them."""
        return self.slice_sources[k] if self.slice_sources is not None else self.all_sources


def plan_series(
    image,
    path: str,
    modality: str | None = None,
    synthetic: bool | None = None,
    copy_patient: bool = False,
    series_description: str | None = None,
    derivation_description: str | None = None,
    series_number: int = 1001,
    same_study: bool = False,  # keep the DICOM source's study and frame of reference
    by_network: bool | None = None,  # a network made the pixels; None: when synthetic (a simulation is not one)
) -> SeriesPlan:
    """Check `image`, encode its pixels and build the header shared by all output layouts."""
    meta = meta_of(image)
    array = array_of(image)
    modality = (modality or str(meta.get("modality") or "")).upper()
    if modality not in MODALITIES:
        found = f"the image's modality is {modality!r}" if modality else "the image records no modality"
        raise OutputError(f"DICOM output needs modality CT or MR; {found}: pass --modality CT or MR", path=path)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[0] != 1:
        raise OutputError(f"DICOM series output takes one channel, got shape {tuple(array.shape)}", path=path)
    if not np.all(np.isfinite(array)):
        raise OutputError("the image holds NaN or infinite values", path=path)
    geometry = slice_geometry(affine_of(image), array.shape[3], path)
    stored, encoding = encode_pixels(array[0])
    synthetic = bool(meta.get("synthetic", False)) if synthetic is None else bool(synthetic)
    derivation = (derivation_description or _derivation(meta, synthetic))[:1024]
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    header = _header(meta, modality, synthetic, copy_patient, series_description, derivation, series_number, date, time)
    if same_study:
        _join_source_study(header, meta, copy_patient)
    source_dicom = meta.get("dicom") or {}
    slice_sources = [[tuple(ref) for ref in refs] for refs in meta.get("source_slices") or []]
    return SeriesPlan(
        modality=modality,
        stored=stored,
        encoding=encoding,
        geometry=geometry,
        synthetic=synthetic,
        by_network=synthetic if by_network is None else bool(by_network),
        header=header,
        all_sources=list(dict.fromkeys(ref for refs in slice_sources for ref in refs)),
        slice_sources=slice_sources if len(slice_sources) == stored.shape[2] else None,
        source_study_uid=str(source_dicom.get("StudyInstanceUID") or "") or None,
        source_series_uid=str(meta.get("series_uid") or "") or None,
        derivation_description=derivation,
        window=display_window(stored, encoding),
        content_date_time=(date, time),
    )


def _header(meta, modality, synthetic, copy_patient, description, derivation, number, date, time) -> Dataset:
    """Patient, General Study, General Series, Frame of Reference, General Equipment, SOP Common."""
    source_dicom = meta.get("dicom") or {}
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.StudyDate, ds.StudyTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "medgan"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = str(source_dicom.get("StudyDescription", ""))[:64] if copy_patient else ""
    kind = "SYNTHETIC" if synthetic else "DERIVED"
    source_description = str(source_dicom.get("SeriesDescription", "")) if copy_patient else ""
    ds.SeriesDescription = (description or f"{kind} {source_description or 'medgan'}")[:64]
    ds.ManufacturerModelName = "medgan"
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, "")  # Type 2: present, empty unless copied
    if copy_patient:
        patient = meta.get("patient") or {}
        for keyword in _PATIENT_KEYWORDS:
            if patient.get(keyword) not in (None, ""):
                setattr(ds, keyword, patient[keyword])
    ds.SyntheticData = "YES" if synthetic else "NO"
    ds.SoftwareVersions = f"medgan {medgan.__version__}"
    ds.PatientPosition = str(source_dicom.get("PatientPosition") or "HFS")
    if source_dicom.get("BodyPartExamined"):
        ds.BodyPartExamined = str(source_dicom["BodyPartExamined"])[:16]
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = ""
    ds.SeriesNumber = number
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ContributingEquipmentSequence = Sequence([_contributing_equipment(synthetic, derivation, date, time)])
    return ds


def _join_source_study(ds: Dataset, meta: dict[str, Any], copy_patient: bool) -> None:
    """The source's study and frame of reference, where it has them; this write's date is not the study's."""
    source_dicom = meta.get("dicom") or {}
    study, frame = (str(source_dicom.get(k) or "") for k in ("StudyInstanceUID", "FrameOfReferenceUID"))
    if study:
        ds.StudyInstanceUID = study
        ds.StudyDate = str((meta.get("patient") or {}).get("StudyDate") or "") if copy_patient else ""
        ds.StudyTime = ""
    if frame:
        ds.FrameOfReferenceUID = frame


def _contributing_equipment(synthetic: bool, derivation: str, date: str, time: str) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(*_EQUIPMENT_PURPOSE[synthetic])])
    item.Manufacturer = "medgan"
    item.ManufacturerModelName = "medgan"
    item.SoftwareVersions = f"medgan {medgan.__version__}"
    item.ContributionDateTime = date + time
    item.ContributionDescription = derivation
    return item


def derivation_code(by_network: bool) -> Dataset:
    """The coded derivation (CID 7203 is extensible) that goes with a DerivationDescription: "Artificial
    Intelligence" when a network made the pixels, "Image Processing" otherwise (a physics simulation included)."""
    return code_item(*_DERIVATION_CODES[by_network])


def _derivation(meta: dict[str, Any], synthetic: bool) -> str:
    """Free text for DerivationDescription, built from medgan's own records only (never file names)."""
    if synthetic:
        what = f"generated by medgan {medgan.__version__}"
        described = str(meta.get("description") or "")  # medgan's own wording, e.g. a phantom's
        return f"{what}: {described}" if described else what
    source = str(meta.get("format") or "")
    origin = f" from a {source.upper()} image" if source else ""
    return f"written by medgan {medgan.__version__}{origin}"
