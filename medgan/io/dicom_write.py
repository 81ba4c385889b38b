"""Write a MetaTensor as a DICOM CT or MR series, one file per slice, marked as derived.

Every file gets new Study/Series/SOP/Frame of Reference UIDs, ImageType DERIVED\\SECONDARY,
a DerivationDescription, SyntheticData (YES for generated images), and, when the image was
read from DICOM, a SourceImageSequence pointing at the slices it came from. The source's
patient identity is not copied unless `copy_patient=True`. Geometry goes into
ImagePositionPatient / ImageOrientationPatient / PixelSpacing / SliceThickness; values in
physical units (HU for CT) are stored through RescaleSlope/Intercept, exactly for integer
data and to 1/65535 of the range for real-valued data.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

import medgan
from medgan.errors import OutputError
from medgan.io.atomic import atomic_dir
from medgan.io.geometry import flip_lps_ras
from medgan.io.image import affine_of, array_of, meta_of

__all__ = ["SOP_CLASSES", "PixelEncoding", "encode_pixels", "write_dicom_series"]

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
_ORTHOGONALITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PixelEncoding:
    """How physical values map to stored integers: value = stored * slope + intercept."""

    dtype: np.dtype
    slope: float
    intercept: float

    @property
    def exact(self) -> bool:
        return self.slope == 1.0 and float(self.intercept).is_integer()


def encode_pixels(values: np.ndarray) -> tuple[np.ndarray, PixelEncoding]:
    """Choose 16-bit storage for `values`: exact for integers, else a linear quantisation."""
    values = np.asarray(values)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(np.mod(values, 1) == 0))
    if integral and low >= -32768 and high <= 32767:
        encoding = PixelEncoding(np.dtype(np.int16), 1.0, 0.0)
    elif integral and high - low <= 65535:
        encoding = PixelEncoding(np.dtype(np.uint16), 1.0, _ds_float(low))
    else:
        slope = _ds_float((high - low) / 65535.0) if high > low else 1.0
        encoding = PixelEncoding(np.dtype(np.uint16), slope, _ds_float(low))
    stored = np.rint((values.astype(np.float64) - encoding.intercept) / encoding.slope)
    info = np.iinfo(encoding.dtype)
    return np.clip(stored, info.min, info.max).astype(encoding.dtype), encoding


def write_dicom_series(
    image,
    folder: str | os.PathLike,
    overwrite: bool = False,
    modality: str | None = None,  # "CT" or "MR"; taken from the image's metadata when absent
    synthetic: bool | None = None,  # SyntheticData YES/NO; from meta["synthetic"] when absent
    copy_patient: bool = False,  # copy the source's PatientName/ID/BirthDate/Sex/Age
    series_description: str | None = None,
    derivation_description: str | None = None,
    series_number: int = 1001,
) -> str:
    """Write `image` (`[1, i, j, k]` or `[1, i, j]`) as `folder/IM00001.dcm ...`; returns the folder."""
    folder = os.fspath(folder)
    meta = meta_of(image)
    array = array_of(image)
    modality = (modality or str(meta.get("modality") or "")).upper()
    if modality not in SOP_CLASSES:
        found = f"the image's modality is {modality!r}" if modality else "the image records no modality"
        raise OutputError(f"DICOM output needs modality CT or MR; {found}: pass --modality CT or MR", path=folder)
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[0] != 1:
        raise OutputError(f"DICOM series output takes one channel, got shape {tuple(array.shape)}", path=folder)
    if not np.all(np.isfinite(array)):
        raise OutputError("the image holds NaN or infinite values", path=folder)
    geometry = _slice_geometry(affine_of(image), array.shape[3], folder)
    stored, encoding = encode_pixels(array[0])
    synthetic = bool(meta.get("synthetic", False)) if synthetic is None else synthetic
    common = _series_dataset(
        meta, modality, encoding, geometry, synthetic, copy_patient, series_description,
        derivation_description, series_number, stored,
    )  # fmt: skip
    sources = meta.get("source_slices") or []
    per_slice_sources = len(sources) == stored.shape[2]
    all_sources = [ref for refs in sources for ref in refs]
    with atomic_dir(folder, overwrite) as temp:
        for k in range(stored.shape[2]):
            ds = _slice_dataset(common, k, geometry, stored[:, :, k])
            refs = sources[k] if per_slice_sources else all_sources
            if refs:
                ds.SourceImageSequence = Sequence([_reference(*ref) for ref in refs])
            ds.save_as(os.path.join(temp, f"IM{k + 1:05d}.dcm"), enforce_file_format=True)
    return folder


@dataclass
class _Geometry:
    row_cosine: np.ndarray
    col_cosine: np.ndarray
    pixel_spacing: tuple[float, float]
    origin: np.ndarray
    step: np.ndarray
    thickness: float


def _slice_geometry(affine_ras: np.ndarray, n_slices: int, folder: str) -> _Geometry:
    lps = flip_lps_ras(affine_ras)
    a0, a1, a2 = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    s0, s1 = float(np.linalg.norm(a0)), float(np.linalg.norm(a1))
    if s0 == 0 or s1 == 0:
        raise OutputError("the affine has a zero-length in-plane axis", path=folder)
    row, col = a0 / s0, a1 / s1
    if abs(float(row @ col)) > _ORTHOGONALITY_TOLERANCE:
        raise OutputError(
            "in-plane voxel axes are not orthogonal; DICOM cannot store such pixels (resample first)", path=folder
        )
    normal = np.cross(row, col)
    thickness = abs(float(a2 @ normal))
    if n_slices > 1 and thickness == 0:
        raise OutputError("slices do not advance along the slice normal", path=folder)
    return _Geometry(row, col, (s1, s0), lps[:3, 3], a2, thickness or float(np.linalg.norm(a2)) or 1.0)


def _series_dataset(
    meta, modality, encoding, geometry, synthetic, copy_patient, description, derivation, number, stored
) -> Dataset:
    now = dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    source_dicom = meta.get("dicom", {}) or {}
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    kind = "SYNTHETIC" if synthetic else "DERIVED"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.StudyDate, ds.StudyTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "medgan"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = str(source_dicom.get("StudyDescription", ""))[:64] if copy_patient else ""
    ds.SeriesDescription = (description or _default_description(meta, kind))[:64]
    ds.ManufacturerModelName = "medgan"
    ds.DerivationDescription = (derivation or _derivation(meta, synthetic))[:1024]
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    if copy_patient:
        for keyword, value in (meta.get("patient") or {}).items():
            if keyword != "StudyDate":
                setattr(ds, keyword, value)
    ds.SyntheticData = "YES" if synthetic else "NO"
    ds.SliceThickness = _ds(geometry.thickness)
    if modality == "CT":
        ds.KVP = ""
    else:
        ds.ScanningSequence = "RM"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D" if stored.shape[2] > 1 else "2D"
        ds.RepetitionTime = ""
        ds.EchoTime = ""
        ds.EchoTrainLength = ""
        ds.SpacingBetweenSlices = _ds(geometry.thickness)
    ds.SoftwareVersions = f"medgan {medgan.__version__}"
    ds.PatientPosition = str(source_dicom.get("PatientPosition", "HFS"))
    ds.Laterality = ""  # Type 2C; a whole-body volume has none
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = ""
    ds.SeriesNumber = number
    ds.AcquisitionNumber = ""
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [_ds(v) for v in np.r_[geometry.row_cosine, geometry.col_cosine]]
    ds.PixelSpacing = [_ds(geometry.pixel_spacing[0]), _ds(geometry.pixel_spacing[1])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[0])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if encoding.dtype == np.int16 else 0
    center, width = _window(stored, encoding)
    ds.WindowCenter, ds.WindowWidth = _ds(center), _ds(width)
    ds.RescaleIntercept = _ds(encoding.intercept)
    ds.RescaleSlope = _ds(encoding.slope)
    ds.RescaleType = "HU" if modality == "CT" else "US"
    ds.BurnedInAnnotation = "NO"
    return ds


def _slice_dataset(common: Dataset, k: int, geometry: _Geometry, plane: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.update(common)
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = k + 1
    position = geometry.origin + k * geometry.step
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(float(position @ np.cross(geometry.row_cosine, geometry.col_cosine)))
    ds.PixelData = np.ascontiguousarray(plane.T).astype(plane.dtype.newbyteorder("<")).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = common.SOPClassUID
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDGAN_{medgan.__version__}"[:16]
    ds.file_meta = meta
    return _sorted(ds)


def _sorted(ds: Dataset) -> Dataset:
    out = Dataset()
    for element in sorted(ds, key=lambda e: e.tag):
        out.add(element)
    out.file_meta = ds.file_meta
    return out


def _reference(sop_class: str, sop_instance: str, frame: int | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if frame is not None:
        item.ReferencedFrameNumber = frame
    return item


def _window(stored: np.ndarray, encoding: PixelEncoding) -> tuple[float, float]:
    """A display window over the 1st-99th percentile of the values (viewers need one)."""
    sample = stored[:: max(1, stored.shape[0] // 64), :: max(1, stored.shape[1] // 64)]
    low, high = np.percentile(sample.astype(np.float64), [1, 99]) * encoding.slope + encoding.intercept
    return (low + high) / 2, max(high - low, 1.0)


def _default_description(meta: dict, kind: str) -> str:
    source = (meta.get("dicom") or {}).get("SeriesDescription", "")
    return f"{kind} {source}".strip() if source else f"{kind} medgan"


def _derivation(meta: dict, synthetic: bool) -> str:
    what = "generated by" if synthetic else "written by"
    source = meta.get("format")
    origin = f" from a {source.upper()} image" if source and not synthetic else ""
    return f"{what} medgan {medgan.__version__}{origin}"


def _ds(value: float) -> str:
    return format_number_as_ds(float(value) + 0.0) if abs(value) > 1e-10 else "0"


def _ds_float(value: float) -> float:
    """The float a DS string will actually hold (DS is limited to 16 characters)."""
    return float(_ds(value))
