"""Write a MetaTensor as a DICOM CT or MR series, marked as derived (and as synthetic when it is).

Two layouts share everything but the pixel module (the shared part is `medgan.io.dicom_plan`):

* one file per slice (CT Image / MR Image Storage), the layout every viewer and PACS takes;
* `multiframe=True`: one Enhanced CT / Enhanced MR Image file (`medgan.io.dicom_multiframe`).

ImageType is DERIVED\\SECONDARY here (DERIVED\\PRIMARY in the enhanced file, where value 2 is
enumerated PRIMARY); UIDs, SyntheticData, the derivation, the contributing equipment, the source
references and what is copied of the patient come from the plan.

Geometry: the slice `k` sits at `origin + k * step` (LPS), computed afresh for every slice and
written with up to 16 significant characters, so positions never accumulate rounding; a step that
is not along the slice normal (gantry tilt) is kept exactly through the per-slice positions.
Values in physical units (HU for CT) go through RescaleSlope/Intercept: exactly for integer data,
to half a quantisation step (slope / 2) for real-valued data (`medgan.io.dicom_encode`).

Readers sort slices along the normal row x column, so a left-handed affine (slice step against
that normal) reads back with the slice axis reversed: the same voxels in space, in another order.
"""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from medgan.io.atomic import atomic_dir
from medgan.io.dicom_encode import ds_text, file_meta, image_pixel, orientation_text, reference_item, save_dataset
from medgan.io.dicom_multiframe import multiframe_dataset
from medgan.io.dicom_plan import SeriesPlan, derivation_code, plan_series

__all__ = ["SOP_CLASSES", "write_dicom_series"]

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


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
    same_study: bool = False,  # keep the DICOM source's study and frame of reference (a derived series beside it)
    by_network: bool | None = None,  # a network made the pixels (None: when synthetic); a simulation is not one
) -> str:
    """Write `image` (`[1, i, j, k]` or `[1, i, j]`) into `folder`; returns the folder.

    Single-frame output is `folder/IM00001.dcm ...` (one file per slice, InstanceNumber k + 1);
    multi-frame output is the one file `folder/IM00001.dcm`. The folder appears whole or not at
    all: files are written to a hidden sibling that is renamed into place at the end.
    """
    folder = os.fspath(folder)
    plan = plan_series(image, folder, modality, synthetic, copy_patient, series_description, derivation_description,
                       series_number, same_study, by_network)  # fmt: skip
    with atomic_dir(folder, overwrite) as temp:
        if multiframe:
            save_dataset(multiframe_dataset(plan), os.path.join(temp, "IM00001.dcm"))
        else:
            for k in range(plan.n_slices):
                save_dataset(_slice_dataset(plan, k), os.path.join(temp, f"IM{k + 1:05d}.dcm"))
    return folder


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
    ds.DerivationCodeSequence = Sequence([derivation_code(plan.by_network)])
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
