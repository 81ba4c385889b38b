"""Regenerate medgan's sample data: small procedural phantoms, the same bytes on every run.

    python sample_data/make_sample_data.py [--out DIR]     # default: the folder of this script

Writes four NIfTI phantoms (each with a JSON sidecar holding its modality and the parameter
record that replays it) and one CT series as DICOM (`dicom/ct_series/`). The series carries
a FICTIONAL patient identity (names, IDs, address, dates, private tags, nested sequences, an
overlay) so that de-identification can be tested on it; every UID is derived from fixed
strings and every date is fixed, so rerunning gives byte-identical files. Each output is
written beside its final name and renamed into place, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

from medgan.data.phantoms import PhantomConfig, make_phantom
from medgan.io import write_image
from medgan.io.atomic import atomic_dir, atomic_file

HERE = os.path.dirname(os.path.abspath(__file__))

VOLUMES = {  # file name: the phantom it holds
    "ct_body_3d.nii.gz": PhantomConfig(kind="ct_body", shape=[128, 128, 48], spacing_mm=[2.0, 2.0, 3.0], seed=1),
    "mr_brain_3d.nii.gz": PhantomConfig(kind="mr_brain", shape=[128, 128, 64], spacing_mm=[1.8, 1.8, 2.5], seed=2),
    "ct_body_2d.nii.gz": PhantomConfig(kind="ct_body", spatial_dims=2, shape=[256, 256], spacing_mm=[1.0, 1.0], seed=3),
    "mr_brain_2d.nii.gz": PhantomConfig(
        kind="mr_brain", spatial_dims=2, shape=[192, 192], spacing_mm=[1.2, 1.2], seed=4
    ),
}
DICOM_SERIES = os.path.join("dicom", "ct_series")
DICOM_PHANTOM = PhantomConfig(kind="ct_body", shape=[128, 128, 28], spacing_mm=[2.0, 2.0, 5.0], seed=5)

# The fictional patient. 555-01xx telephone numbers and the ZZ region are reserved for fiction.
PATIENT = {
    "PatientName": "Brightwater^Harriet^Jane",
    "PatientID": "RB4471902",
    "PatientBirthDate": "19560214",
    "PatientSex": "F",
}
STUDY_DATE, STUDY_TIME = "20240315", "093012"
SERIES_TIME, ACQUISITION_TIME, CREATION_TIME = "093544", "093601", "094210"
INSTITUTION = "Ravenbrook General Hospital"
INSTITUTION_ADDRESS = "1200 Harbor View Road, Ravenbrook, ZZ 99999"
ACCESSION = "RB24031500123"
REFERRING = "Okonkwo^Adaeze^^Dr"
UID_ROOT = "medgan sample_data ct_series v1"
PRIVATE_GROUP, PRIVATE_CREATOR = 0x0009, "RAVENBROOK PACS 1.0"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the SOP class ReferencedStudySequence names


def uid(*parts: object) -> str:
    """A UID fixed by its parts, so reruns write the same UIDs."""
    return generate_uid(entropy_srcs=[UID_ROOT, *(str(p) for p in parts)])


def make_sample_data(out: str = HERE) -> list[str]:
    """Write every sample file under `out`; returns their paths relative to `out`."""
    written = []
    for name, cfg in VOLUMES.items():
        image = make_phantom(cfg)
        write_image(image, os.path.join(out, name), overwrite=True)
        sidecar = name.removesuffix(".nii.gz") + ".json"
        write_sidecar(image.meta, os.path.join(out, sidecar))
        written += [name, sidecar]
    written += [os.path.join(DICOM_SERIES, name) for name in write_fake_patient_series(os.path.join(out, DICOM_SERIES))]
    return written


def write_sidecar(meta: dict, path: str) -> None:
    """A BIDS-style sidecar: medgan reads `Modality` from it; `PhantomParams` replays the image."""
    record = {
        "Modality": meta["modality"],
        "Units": meta["units"],
        "SyntheticData": True,
        "Description": meta["description"],
        "PhantomParams": meta["phantom_params"],
    }
    with atomic_file(path, overwrite=True) as temp, open(temp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")


def write_fake_patient_series(folder: str) -> list[str]:
    """The DICOM phantom series with the fictional identity added; returns the file names."""
    from medgan.io.dicom_write import write_dicom_series

    image = make_phantom(DICOM_PHANTOM)
    image.meta["patient"] = dict(PATIENT)
    image.meta["dicom"] = {"StudyDescription": "CT ABD W CONTRAST - BRIGHTWATER, HARRIET"}
    with atomic_dir(folder, overwrite=True) as temp:
        staging = os.path.join(temp, "staging")
        write_dicom_series(image, staging, copy_patient=True, series_description="AXIAL 5.0 ABD")
        names = sorted(os.listdir(staging))
        other_uids: dict[str, str] = {}
        for index, name in enumerate(names):
            ds = pydicom.dcmread(os.path.join(staging, name))
            add_fake_identity(ds, index, len(names))
            pin_uids(ds, other_uids)
            ds.save_as(os.path.join(temp, name), enforce_file_format=True)
        shutil.rmtree(staging)
    return names


def pin_dates(ds: Dataset) -> None:
    """Replace every non-empty date and time the writer stamped (its clock) with the fixed creation time."""
    fixed = {"DA": STUDY_DATE, "TM": CREATION_TIME, "DT": STUDY_DATE + CREATION_TIME}

    def pin(dataset: Dataset, element) -> None:
        if element.VR in fixed and element.value:
            element.value = fixed[element.VR]

    ds.walk(pin)


def pin_uids(ds: Dataset, mapping: dict[str, str]) -> None:
    """Give any instance UID the writer made that is not set here a fixed one (same UID, same replacement)."""
    mine = {ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID}

    def pin(dataset: Dataset, element) -> None:
        if element.VR != "UI" or not element.value or element.keyword == "ImplementationClassUID":
            return
        values = element.value if isinstance(element.value, list) else [element.value]
        kept = [UID(v).name != v or v in mine for v in values]  # registered UIDs have names; instance UIDs do not
        if all(kept):
            return
        pinned = [
            v if keep else mapping.setdefault(v, uid("other", len(mapping)))
            for v, keep in zip(values, kept, strict=True)
        ]
        element.value = pinned if isinstance(element.value, list) else pinned[0]

    ds.walk(pin)
    ds.file_meta.walk(pin)


def add_fake_identity(ds: Dataset, index: int, count: int) -> None:
    """Give one slice the fictional patient, fixed UIDs and dates, private tags, sequences and an overlay."""
    pin_dates(ds)
    sop_instance = uid("instance", index)
    ds.SOPInstanceUID = sop_instance
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.FrameOfReferenceUID = uid("frame of reference")
    ds.InstanceCreationDate, ds.InstanceCreationTime = STUDY_DATE, CREATION_TIME
    ds.StudyDate, ds.StudyTime = STUDY_DATE, STUDY_TIME
    ds.SeriesDate, ds.SeriesTime = STUDY_DATE, SERIES_TIME
    ds.AcquisitionDate, ds.AcquisitionTime = STUDY_DATE, ACQUISITION_TIME
    ds.ContentDate, ds.ContentTime = STUDY_DATE, ACQUISITION_TIME

    ds.PatientBirthDate = PATIENT["PatientBirthDate"]
    ds.PatientAge, ds.PatientSize, ds.PatientWeight = "068Y", "1.68", "64.5"
    ds.IssuerOfPatientID = "RAVENBROOK GH"
    ds.OtherPatientIDs = "ALT-55832190"
    ds.OtherPatientIDsSequence = Sequence(
        [_item(PatientID="ALT-55832190", IssuerOfPatientID="RAVENBROOK HEALTH NETWORK", TypeOfPatientID="TEXT")]
    )
    ds.PatientAddress = "42 Elmwood Lane, Ravenbrook, ZZ 99999"
    ds.PatientTelephoneNumbers = "555-0142"
    ds.AdditionalPatientHistory = "Harriet Brightwater: follow-up of hepatic lesion seen on CT 2023-09-02"

    ds.InstitutionName, ds.InstitutionAddress = INSTITUTION, INSTITUTION_ADDRESS
    ds.InstitutionalDepartmentName = "Radiology"
    ds.ReferringPhysicianName = REFERRING
    ds.ReferringPhysicianIdentificationSequence = Sequence(
        [
            _item(
                PersonIdentificationCodeSequence=Sequence(
                    [_item(CodeValue="RP-0042", CodingSchemeDesignator="99RBGH", CodeMeaning="Okonkwo, Adaeze")]
                ),
                InstitutionName=INSTITUTION,
                PersonTelephoneNumbers="555-0199",
            )
        ]
    )
    ds.NameOfPhysiciansReadingStudy = "Moreau^Claire"
    ds.PerformingPhysicianName = "Lindqvist^Per"
    ds.OperatorsName = "Fischer^Lukas"
    ds.StationName, ds.DeviceSerialNumber = "RBGH-CT02", "48213-7"
    ds.AccessionNumber, ds.StudyID = ACCESSION, "CT240315"
    ds.AcquisitionNumber = 1
    ds.ImageComments = f"Harriet Brightwater (MRN RB4471902), slice {index + 1} of {count}; FICTIONAL test patient"
    ds.ReferencedStudySequence = Sequence(
        [_item(ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT, ReferencedSOPInstanceUID=uid("referenced study"))]
    )
    ds.RequestAttributesSequence = Sequence(
        [
            _item(
                RequestedProcedureID="RP-240315-07",
                ScheduledProcedureStepID="SPS-240315-07",
                AccessionNumber=ACCESSION,
                RequestedProcedureDescription="CT abdomen with contrast for H. Brightwater",
                ScheduledProcedureStepDescription="CT ABD W CONTRAST",
            )
        ]
    )

    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "BRIGHTWATER, HARRIET")  # vendors do copy the name into private tags
    block.add_new(0x02, "LO", PATIENT["PatientID"])
    block.add_new(0x03, "DS", "0.875")
    block.add_new(0x04, "UL", 48213)
    _add_overlay(ds)


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _add_overlay(ds: Dataset) -> None:
    """A graphics overlay (group 6000): an annotator's rectangle over the liver."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    mark = np.zeros((rows, columns), dtype=np.uint8)
    top, bottom, left, right = rows // 4, rows // 2, columns // 6, columns // 2
    mark[top : bottom + 1, [left, left + 1, right - 1, right]] = 1
    mark[[top, top + 1, bottom - 1, bottom], left : right + 1] = 1
    ds.add_new(0x60000010, "US", rows)  # OverlayRows
    ds.add_new(0x60000011, "US", columns)  # OverlayColumns
    ds.add_new(0x60000022, "LO", "Liver ROI, annotated by Fischer^Lukas")  # OverlayDescription
    ds.add_new(0x60000040, "CS", "G")  # OverlayType: graphics
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin (row, column), 1-based
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60001500, "LO", "LIVER ROI")  # OverlayLabel
    ds.add_new(0x60003000, "OW", pack_bits(mark.ravel()))  # OverlayData, row by row, one bit a pixel


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="folder to write into (default: %(default)s)")
    args = parser.parse_args(argv)
    for path in make_sample_data(args.out):
        print(os.path.join(args.out, path))


if __name__ == "__main__":
    main()
