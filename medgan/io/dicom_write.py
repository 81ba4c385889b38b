"""Write a MetaTensor as a DICOM CT or MR series, marked as derived (and as synthetic when it is).

Two layouts share everything but the pixel module:

* one file per slice (CT Image / MR Image Storage), the layout every viewer and PACS takes;
* `multiframe=True`: one Enhanced CT / Enhanced MR Image file (`medgan.io.dicom_multiframe`).

Every output gets new Study/Series/SOP/Frame of Reference UIDs, ImageType DERIVED\\SECONDARY
(DERIVED\\PRIMARY in the enhanced file, where value 2 is enumerated PRIMARY), a coded and a
free-text derivation, SyntheticData (YES for generated images), a ContributingEquipmentSequence
naming medgan as synthesizing or processing equipment and, when the image was read from DICOM,
references to the source instances it came from (slice by slice when the slice count still
matches). The source's patient identity (and its free-text descriptions, which PS3.15 Annex E
treats as identifying) is copied only with `copy_patient=True`.

Geometry: the slice `k` sits at `origin + k * step` (LPS), computed afresh for every slice and
written with up to 16 significant characters, so positions never accumulate rounding; a step that
is not along the slice normal (gantry tilt) is kept exactly through the per-slice positions.
Values in physical units (HU for CT) go through RescaleSlope/Intercept: exactly for integer data,
to half a quantisation step (slope / 2) for real-valued data (`medgan.io.dicom_encode`).

Readers sort slices along the normal row x column, so a left-handed affine (slice step against
that normal) reads back with the slice axis reversed: the same voxels in space, in another order.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

import medgan
from medgan.errors import OutputError
from medgan.io.atomic import atomic_dir
from medgan.io.dicom_encode import (
    PixelEncoding,
    SliceGeometry,
    code_item,
    display_window,
    ds_text,
    encode_pixels,
    file_meta,
    image_pixel,
    orientation_text,
    reference_item,
    save_dataset,
    slice_geometry,
)
from medgan.io.image import affine_of, array_of, meta_of

__all__ = ["SOP_CLASSES", "PixelEncoding", "SeriesPlan", "encode_pixels", "plan_series", "write_dicom_series"]

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
# Copied with copy_patient=True only; anything else in meta["patient"] is ignored.
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


def write_dicom_series(
    image,
    folder: str | os.PathLike,
    overwrite: bool = False,
    modality: str | None = None,  # "CT" or "MR"; taken from the image's metadata when absent
    synthetic: bool | None = None,  # SyntheticData YES/NO; from meta["synthetic"] when absent
    copy_patient: bool = False,  # copy the source's PatientName/ID/BirthDate/Sex/Age and descriptions
    multiframe: bool = False,  # one Enhanced CT/MR file instead of one file per slice
    series_description: str | None = None,  # default: "SYNTHETIC medgan" or "DERIVED medgan"
    derivation_description: str | None = None,  # default: what medgan did, from the metadata
    series_number: int = 1001,  # high, so it sorts after the scanner's own series
) -> str:
    """Write `image` (`[1, i, j, k]` or `[1, i, j]`) into `folder`; returns the folder.

    Single-frame output is `folder/IM00001.dcm ...` (one file per slice, InstanceNumber k + 1);
    multi-frame output is the one file `folder/IM00001.dcm`. The folder appears whole or not at
    all: files are written to a hidden sibling that is renamed into place at the end.
    """
    folder = os.fspath(folder)
    plan = plan_series(
        image, folder, modality, synthetic, copy_patient, series_description, derivation_description, series_number
    )
    with atomic_dir(folder, overwrite) as temp:
        if multiframe:
            from medgan.io.dicom_multiframe import multiframe_dataset

            save_dataset(multiframe_dataset(plan), os.path.join(temp, "IM00001.dcm"))
        else:
            for k in range(plan.n_slices):
                save_dataset(_slice_dataset(plan, k), os.path.join(temp, f"IM{k + 1:05d}.dcm"))
    return folder


def plan_series(
    image,
    path: str,
    modality: str | None = None,
    synthetic: bool | None = None,
    copy_patient: bool = False,
    series_description: str | None = None,
    derivation_description: str | None = None,
    series_number: int = 1001,
) -> SeriesPlan:
    """Check `image`, encode its pixels and build the header shared by all output layouts."""
    meta = meta_of(image)
    array = array_of(image)
    modality = (modality or str(meta.get("modality") or "")).upper()
    if modality not in SOP_CLASSES:
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
    source_dicom = meta.get("dicom") or {}
    slice_sources = [[tuple(ref) for ref in refs] for refs in meta.get("source_slices") or []]
    return SeriesPlan(
        modality=modality,
        stored=stored,
        encoding=encoding,
        geometry=geometry,
        synthetic=synthetic,
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


def _contributing_equipment(synthetic: bool, derivation: str, date: str, time: str) -> Dataset:
    item = Dataset()
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(*_EQUIPMENT_PURPOSE[synthetic])])
    item.Manufacturer = "medgan"
    item.ManufacturerModelName = "medgan"
    item.SoftwareVersions = f"medgan {medgan.__version__}"
    item.ContributionDateTime = date + time
    item.ContributionDescription = derivation
    return item


def _slice_dataset(plan: SeriesPlan, k: int) -> Dataset:
    """One CT Image or MR Image instance: the shared header plus this slice's plane and pixels."""
    ds = Dataset()
    ds.update(plan.header)
    geometry, encoding = plan.geometry, plan.encoding
    ds.SOPClassUID = SOP_CLASSES[plan.modality]
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if plan.modality == "CT" else "OTHER"]
    ds.ContentDate, ds.ContentTime = plan.content_date_time
    ds.DerivationDescription = plan.derivation_description
    ds.DerivationCodeSequence = Sequence([derivation_code(plan.synthetic)])
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = ""
    ds.BurnedInAnnotation = "NO"
    # Type 2C, required for paired body parts; medgan cannot tell which part an image shows, and
    # empty is the standard's value for "unknown" (dciodvfy warns that it should then be known).
    ds.Laterality = ""
    position = geometry.position_lps_mm(k)
    ds.ImagePositionPatient = [ds_text(v) for v in position]
    ds.ImageOrientationPatient = orientation_text(geometry)
    ds.PixelSpacing = [ds_text(v) for v in geometry.pixel_spacing_mm]
    ds.SliceThickness = ds_text(geometry.thickness_mm)
    ds.SliceLocation = ds_text(float(position @ geometry.normal))
    if plan.modality == "CT":
        _ct_image(ds, plan)
    else:
        _mr_image(ds, plan)
    image_pixel(ds, plan.stored[:, :, k][np.newaxis], encoding)
    ds.WindowCenter, ds.WindowWidth = ds_text(plan.window[0]), ds_text(plan.window[1])
    if plan.has_sources:
        ds.SourceImageSequence = Sequence([reference_item(*ref) for ref in plan.sources_of(k)])
    ds.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    return ds


def _ct_image(ds: Dataset, plan: SeriesPlan) -> None:
    ds.KVP = ""  # Type 2: unknown for a computed image
    ds.RescaleIntercept = ds_text(plan.encoding.intercept)
    ds.RescaleSlope = ds_text(plan.encoding.slope)
    ds.RescaleType = "HU"
    tilt = plan.geometry.gantry_tilt_deg()
    if tilt is not None:
        ds.GantryDetectorTilt = ds_text(round(tilt, 6))


def _mr_image(ds: Dataset, plan: SeriesPlan) -> None:
    ds.ScanningSequence = "RM"  # research mode: no acquisition sequence applies
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D" if plan.n_slices > 1 else "2D"
    ds.RepetitionTime = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    ds.SpacingBetweenSlices = ds_text(plan.geometry.thickness_mm)
    # The MR Image IOD has no Modality LUT; scanners still write rescale for real-valued maps,
    # and medgan needs it for non-integer data. Integer data goes without, as the IOD expects.
    if not (plan.encoding.slope == 1.0 and plan.encoding.intercept == 0.0):
        ds.RescaleIntercept = ds_text(plan.encoding.intercept)
        ds.RescaleSlope = ds_text(plan.encoding.slope)
        ds.RescaleType = "US"


def derivation_code(synthetic: bool) -> Dataset:
    """The coded derivation (CID 7203 is extensible) that goes with a DerivationDescription."""
    return code_item(*_DERIVATION_CODES[synthetic])


def _derivation(meta: dict[str, Any], synthetic: bool) -> str:
    """Free text for DerivationDescription, built from medgan's own records only (never file names)."""
    if synthetic:
        what = f"generated by medgan {medgan.__version__}"
        described = str(meta.get("description") or "")  # medgan's own wording, e.g. a phantom's
        return f"{what}: {described}" if described else what
    source = str(meta.get("format") or "")
    origin = f" from a {source.upper()} image" if source else ""
    return f"written by medgan {medgan.__version__}{origin}"
