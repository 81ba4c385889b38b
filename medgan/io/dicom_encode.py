"""Values and geometry as DICOM writes them: 16-bit pixels with rescale, DS strings, plane geometry.

The building blocks shared by `medgan.io.dicom_write` (one file per slice) and
`medgan.io.dicom_multiframe` (one Enhanced CT/MR file). Nothing here knows about IODs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

import medgan
from medgan.errors import OutputError
from medgan.io.geometry import flip_lps_ras

__all__ = [
    "PixelEncoding",
    "SliceGeometry",
    "code_item",
    "display_window",
    "ds_float",
    "ds_text",
    "encode_pixels",
    "file_meta",
    "image_pixel",
    "orientation_text",
    "reference_item",
    "save_dataset",
    "slice_geometry",
]

_ORTHOGONALITY_TOLERANCE = 1e-4  # |cos| between in-plane axes; DICOM pixels are rectangular
_TILT_TOLERANCE_MM = 1e-6  # a step component along the row axis below this is not a shear
_COSINE_ZERO = 1e-12  # direction cosines below this are written as 0 (rotation round-off)
_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")  # CID 7202


@dataclass(frozen=True)
class PixelEncoding:
    """How physical values map to stored integers: value = stored * slope + intercept."""

    dtype: np.dtype
    slope: float
    intercept: float

    @property
    def exact(self) -> bool:
        """Whether every integer value is stored without loss."""
        return self.slope == 1.0 and float(self.intercept).is_integer()


def encode_pixels(values: np.ndarray) -> tuple[np.ndarray, PixelEncoding]:
    """Choose 16-bit storage for `values`: exact for integers, else a linear quantisation.

    Slope and intercept are the values their DS strings hold, so a reader that applies the
    written strings gets back each value to within slope / 2.
    """
    values = np.asarray(values)
    if values.dtype == np.bool_:
        values = values.astype(np.int16)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    integral = np.issubdtype(values.dtype, np.integer) or bool(np.all(np.mod(values, 1) == 0))
    if integral and low >= -32768 and high <= 32767:
        encoding = PixelEncoding(np.dtype(np.int16), 1.0, 0.0)
    elif integral and high - low <= 65535:
        encoding = PixelEncoding(np.dtype(np.uint16), 1.0, low)
    else:
        slope = ds_float((high - low) / 65535.0) if high > low else 1.0
        encoding = PixelEncoding(np.dtype(np.uint16), slope, ds_float(low))
    stored = np.rint((values.astype(np.float64) - encoding.intercept) / encoding.slope)
    info = np.iinfo(encoding.dtype)
    return np.clip(stored, info.min, info.max).astype(encoding.dtype), encoding


@dataclass(frozen=True)
class SliceGeometry:
    """Where the slices of a volume lie, in DICOM's LPS millimetres."""

    row_cosine: np.ndarray  # direction of increasing column index (array axis i)
    col_cosine: np.ndarray  # direction of increasing row index (array axis j)
    pixel_spacing_mm: tuple[float, float]  # DICOM order: (between rows, between columns)
    origin_lps_mm: np.ndarray  # centre of the first voxel of the first slice
    step_lps_mm: np.ndarray  # from one slice's position to the next (tilt included)
    thickness_mm: float  # distance between slices along the normal (nominal for one slice)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_cosine, self.col_cosine)

    def position_lps_mm(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice `k`, from the origin (never by adding steps up)."""
        return self.origin_lps_mm + k * self.step_lps_mm

    def gantry_tilt_deg(self) -> float | None:
        """The tilt when slices are sheared about the row axis only (a tilted CT gantry), else None.

        The standard fixes no sign ("not intended for mathematical computations"; the positions
        carry the geometry). medgan's: positive when, as slices advance along the normal, their
        positions move along the column direction (increasing row index).
        """
        if abs(float(self.step_lps_mm @ self.row_cosine)) > _TILT_TOLERANCE_MM:
            return None
        along_normal = float(self.step_lps_mm @ self.normal)
        along_col = float(self.step_lps_mm @ self.col_cosine)
        if abs(along_col) <= _TILT_TOLERANCE_MM or along_normal == 0:
            return None
        return float(np.degrees(np.arctan2(along_col, abs(along_normal))))


def slice_geometry(affine_ras: np.ndarray, n_slices: int, path: str) -> SliceGeometry:
    """Split a RAS affine into DICOM plane geometry; refuses what DICOM pixels cannot represent."""
    lps = flip_lps_ras(affine_ras)
    a0, a1, a2 = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    s0, s1 = float(np.linalg.norm(a0)), float(np.linalg.norm(a1))
    if s0 == 0 or s1 == 0:
        raise OutputError("the affine has a zero-length in-plane axis", path=path)
    row, col = a0 / s0, a1 / s1
    if abs(float(row @ col)) > _ORTHOGONALITY_TOLERANCE:
        raise OutputError(
            "in-plane voxel axes are not orthogonal; DICOM cannot store such pixels (resample first)", path=path
        )
    thickness = abs(float(a2 @ np.cross(row, col)))
    if n_slices > 1 and thickness == 0:
        raise OutputError("slices do not advance along the slice normal", path=path)
    if n_slices == 1:
        thickness = thickness or float(np.linalg.norm(a2)) or 1.0
    return SliceGeometry(row, col, (s1, s0), lps[:3, 3].copy(), a2.copy(), thickness)


def image_pixel(ds: Dataset, stored: np.ndarray, encoding: PixelEncoding) -> None:
    """Image Pixel module for `stored` shaped (frames, i, j): DICOM rows run along j, columns along i."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[2]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if encoding.dtype == np.int16 else 0
    frames_rows_cols = np.ascontiguousarray(stored.transpose(0, 2, 1))
    ds.PixelData = frames_rows_cols.astype(frames_rows_cols.dtype.newbyteorder("<")).tobytes()


def file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    """Part 10 file meta information for an instance stored as explicit VR little endian."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDGAN_{medgan.__version__}"[:16]
    return meta


def save_dataset(ds: Dataset, path: str) -> None:
    """Write a Part 10 file (preamble, file meta, explicit VR little endian)."""
    ds.save_as(path, enforce_file_format=True)


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One item of a code sequence (Code Sequence Macro, basic form)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def reference_item(sop_class: str, sop_instance: str, frame: int | None) -> Dataset:
    """An image reference (Image SOP Instance Reference Macro) with its purpose."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if frame is not None:
        item.ReferencedFrameNumber = frame
    item.PurposeOfReferenceCodeSequence = Sequence([code_item(*_SOURCE_PURPOSE)])
    return item


def orientation_text(geometry: SliceGeometry) -> list[str]:
    """ImageOrientationPatient as DS strings, rotation round-off (|cos| < 1e-12) written as 0."""
    cosines = np.r_[geometry.row_cosine, geometry.col_cosine]
    return [ds_text(0.0 if abs(v) < _COSINE_ZERO else v) for v in cosines]


def display_window(stored: np.ndarray, encoding: PixelEncoding) -> tuple[float, float]:
    """A display window over the 1st-99th percentile of the values (viewers need one)."""
    sample = stored[:: max(1, stored.shape[0] // 64), :: max(1, stored.shape[1] // 64)]
    low, high = np.percentile(sample.astype(np.float64), [1, 99]) * encoding.slope + encoding.intercept
    return float((low + high) / 2), float(max(high - low, 1.0))


def ds_text(value: float) -> str:
    """A DS string (at most 16 characters) as close to `value` as DS allows, without padding zeros."""
    value = float(value) + 0.0  # folds -0.0 into 0.0
    if value == 0:
        return "0"
    shortest = repr(value)
    if len(shortest) <= 16:
        return shortest[:-2] if shortest.endswith(".0") else shortest
    text = format_number_as_ds(value)
    if "." in text and "e" not in text:
        text = text.rstrip("0").rstrip(".")
    return text


def ds_float(value: float) -> float:
    """The float a DS string will actually hold (DS is limited to 16 characters)."""
    return float(ds_text(value))
