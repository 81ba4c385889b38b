"""One Enhanced CT / Enhanced MR Image file for a whole volume (`write_dicom_series(..., multiframe=True)`).

Why Enhanced CT/MR Image Storage and not the Legacy Converted Enhanced CT/MR classes: the
legacy classes exist to repackage existing single-frame instances, and their Conversion Source
Attributes Sequence (Type 1, per frame) must reference the instance each frame was converted
from. medgan's images are new pixel data, often generated from nothing or read from NIfTI, so
there is no such instance to name; claiming one would be false. The Enhanced classes fit:
their acquisition functional groups (CT Acquisition Details, MR Timing, ...) and module
attributes are required only when the frame type is ORIGINAL or MIXED, so a DERIVED volume is
described completely without inventing scanner parameters.

Layout of the file:

* shared functional groups: Pixel Measures, Plane Orientation, Pixel Value Transformation
  (rescale to HU), Frame VOI LUT, CT/MR Image Frame Type, Frame Anatomy and, for CT,
  Irradiation Event Identification;
* per-frame functional groups: Plane Position (exact per frame, so gantry tilt is kept), Frame
  Content (Stack ID 1, In-Stack Position and the Dimension Index Value k + 1) and, when the
  image was read from DICOM, Derivation Image with that frame's Source Image Sequence;
* Multi-frame Dimension: one dimension, ImagePositionPatient inside the Plane Position
  Sequence, so frame order is spatial order;
* Source Image Evidence and Common Instance Reference naming the source study and series.

Attributes the Enhanced IODs make Type 1 although a computed volume has no true value, and
what is written instead:

* ImageType/FrameType value 2 is enumerated PRIMARY only (the single-frame files say SECONDARY);
* Frame Anatomy: the source's BodyPartExamined mapped to its SNOMED code (PS3.16 Annex L) for
  unpaired regions, else SCT 123037004 "Body structure" (unspecified); FrameLaterality U;
* Irradiation Event UID (Enhanced CT): a new UID, since no exposure produced these pixels;
* Applicable Safety Standard Agency (Enhanced MR): IEC, described as not applicable;
* Device Serial Number: "medgan" (software has none);
* without a source image the Derivation Image group is left out (its Source Image Sequence would
  oblige a non-empty Source Image Evidence Sequence); the DerivationDescription text then lives
  in ContributingEquipmentSequence's ContributionDescription, which every output carries.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import EnhancedCTImageStorage, EnhancedMRImageStorage, generate_uid

from medgan.io.dicom_encode import code_item, ds_text, file_meta, image_pixel, orientation_text, reference_item
from medgan.io.dicom_plan import SeriesPlan, derivation_code

__all__ = ["ENHANCED_SOP_CLASSES", "multiframe_dataset"]

ENHANCED_SOP_CLASSES = {"CT": EnhancedCTImageStorage, "MR": EnhancedMRImageStorage}
# ImageType / FrameType: value 3 (image flavor) VOLUME, value 4 (derived pixel contrast) NONE,
# since medgan does not combine frames (no MIP, subtraction, ...).
# Value 2 is enumerated PRIMARY for enhanced images (SECONDARY is not allowed there).
_FRAME_TYPE = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
# BodyPartExamined -> Anatomic Region (PS3.16 Annex L), unpaired regions only: a paired part
# (knee, breast, ...) would need a laterality that medgan does not know.
_BODY_PARTS = {
    "HEAD": codes.SCT.Head,
    "BRAIN": codes.SCT.Brain,
    "SKULL": codes.SCT.Skull,
    "NECK": codes.SCT.Neck,
    "HEADNECK": codes.SCT.HeadAndNeck,
    "CHEST": codes.SCT.Chest,
    "HEART": codes.SCT.Heart,
    "ABDOMEN": codes.SCT.Abdomen,
    "LIVER": codes.SCT.Liver,
    "PELVIS": codes.SCT.Pelvis,
    "PROSTATE": codes.SCT.Prostate,
    "ABDOMENPELVIS": codes.SCT.AbdomenAndPelvis,
    "CHESTABDOMEN": codes.SCT.ChestAndAbdomen,
    "CHESTABDPELVIS": codes.SCT.ChestAbdomenAndPelvis,
    "SPINE": codes.SCT.Spine,
    "CSPINE": codes.SCT.CervicalSpine,
    "TSPINE": codes.SCT.ThoracicSpine,
    "LSPINE": codes.SCT.LumbarSpine,
    "WHOLEBODY": codes.SCT.EntireBody,
}
_UNSPECIFIED_ANATOMY = codes.SCT.BodyStructure


def multiframe_dataset(plan: SeriesPlan) -> Dataset:
    """The Enhanced CT/MR Image instance holding every slice of `plan` as a frame."""
    ds = Dataset()
    ds.update(plan.header)
    ds.SOPClassUID = ENHANCED_SOP_CLASSES[plan.modality]
    ds.SOPInstanceUID = generate_uid()
    date, time = plan.content_date_time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceNumber = 1
    _enhanced_equipment(ds)
    _enhanced_image(ds, plan)
    ds.AcquisitionContextSequence = Sequence()  # Type 2: no acquisition context known
    ds.NumberOfFrames = plan.n_slices
    image_pixel(ds, plan.stored.transpose(2, 0, 1), plan.encoding)  # (i, j, k) -> frames k
    with_sources = _references_sources(plan)
    per_frame_sources = with_sources and plan.slice_sources is not None
    shared = _shared_groups(plan)
    if with_sources and not per_frame_sources:  # every frame derives from every source: say it once
        shared.DerivationImageSequence = Sequence([_derivation(plan, plan.all_sources)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = [_frame_groups(plan, k, per_frame_sources) for k in range(plan.n_slices)]
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    _dimensions(ds)
    if with_sources:
        # The same instances twice, in the two reference macros the standard asks for.
        ds.SourceImageEvidenceSequence = Sequence([_source_study(plan, "ReferencedSOPSequence")])
        ds.StudiesContainingOtherReferencedInstancesSequence = Sequence(
            [_source_study(plan, "ReferencedInstanceSequence")]
        )
    ds.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    return ds


def _references_sources(plan: SeriesPlan) -> bool:
    """Sources are referenced only when their study and series are known (the evidence needs both)."""
    return plan.has_sources and bool(plan.source_study_uid) and bool(plan.source_series_uid)


def _enhanced_equipment(ds: Dataset) -> None:
    # Enhanced General Equipment makes these Type 1; software has no serial number, so the
    # attribute names the product rather than leaving it empty.
    ds.DeviceSerialNumber = "medgan"


def _enhanced_image(ds: Dataset, plan: SeriesPlan) -> None:
    """Enhanced CT/MR Image module (the Common CT/MR Image Description at image level)."""
    ds.ImageType = _FRAME_TYPE
    _image_description(ds, plan)
    ds.ContentQualification = "RESEARCH"  # medgan output is not a clinical product
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    if plan.modality == "MR":
        ds.ApplicableSafetyStandardAgency = "IEC"  # Type 1, though no RF or gradients were applied
        ds.ApplicableSafetyStandardDescription = "not applicable: computed image, no acquisition"


def _image_description(item: Dataset, plan: SeriesPlan) -> None:
    """Common CT/MR (and MR) Image Description macro, used at image level and per frame type."""
    item.PixelPresentation = "MONOCHROME"
    item.VolumetricProperties = "VOLUME"
    item.VolumeBasedCalculationTechnique = "NONE"
    if plan.modality == "MR":
        item.ComplexImageComponent = "MAGNITUDE"
        item.AcquisitionContrast = "UNKNOWN"


def _shared_groups(plan: SeriesPlan) -> Dataset:
    geometry, encoding = plan.geometry, plan.encoding
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [ds_text(v) for v in geometry.pixel_spacing_mm]
    measures.SliceThickness = ds_text(geometry.thickness_mm)
    measures.SpacingBetweenSlices = ds_text(geometry.thickness_mm)
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = orientation_text(geometry)
    shared.PlaneOrientationSequence = Sequence([orientation])
    rescale = Dataset()
    rescale.RescaleIntercept = ds_text(encoding.intercept)
    rescale.RescaleSlope = ds_text(encoding.slope)
    rescale.RescaleType = "HU" if plan.modality == "CT" else "US"
    shared.PixelValueTransformationSequence = Sequence([rescale])
    window = Dataset()
    window.WindowCenter, window.WindowWidth = ds_text(plan.window[0]), ds_text(plan.window[1])
    shared.FrameVOILUTSequence = Sequence([window])
    frame_type = Dataset()
    frame_type.FrameType = _FRAME_TYPE
    _image_description(frame_type, plan)
    if plan.modality == "CT":
        shared.CTImageFrameTypeSequence = Sequence([frame_type])
        event = Dataset()
        event.IrradiationEventUID = generate_uid()  # Type 1; no exposure produced these pixels
        shared.IrradiationEventIdentificationSequence = Sequence([event])
    else:
        shared.MRImageFrameTypeSequence = Sequence([frame_type])
    shared.FrameAnatomySequence = Sequence([_anatomy(plan)])
    return shared


def _anatomy(plan: SeriesPlan) -> Dataset:
    body_part = str(plan.header.get("BodyPartExamined", "") or "").upper()
    region = _BODY_PARTS.get(body_part, _UNSPECIFIED_ANATOMY)
    item = Dataset()
    item.AnatomicRegionSequence = Sequence([code_item(region.value, region.scheme_designator, region.meaning)])
    # The table maps unpaired regions only; FrameLaterality (R, L, U, B) has no "unknown", so the
    # unspecified fallback says U as well.
    item.FrameLaterality = "U"
    return item


def _frame_groups(plan: SeriesPlan, k: int, with_sources: bool) -> Dataset:
    frame = Dataset()
    position = Dataset()
    position.ImagePositionPatient = [ds_text(v) for v in plan.geometry.position_lps_mm(k)]
    frame.PlanePositionSequence = Sequence([position])
    content = Dataset()
    content.StackID = "1"
    content.InStackPositionNumber = k + 1
    content.DimensionIndexValues = [k + 1]
    frame.FrameContentSequence = Sequence([content])
    if with_sources:
        frame.DerivationImageSequence = Sequence([_derivation(plan, plan.sources_of(k))])
    return frame


def _derivation(plan: SeriesPlan, sources: list) -> Dataset:
    """Derivation Image macro item for one frame and the source frames it was made from."""
    item = Dataset()
    item.DerivationDescription = plan.derivation_description
    item.DerivationCodeSequence = Sequence([derivation_code(plan.by_network)])
    item.SourceImageSequence = Sequence([reference_item(*ref) for ref in sources])
    return item


def _dimensions(ds: Dataset) -> None:
    """One spatial dimension: frames are indexed by their ImagePositionPatient."""
    organization_uid = generate_uid()
    organization = Dataset()
    organization.DimensionOrganizationUID = organization_uid
    ds.DimensionOrganizationSequence = Sequence([organization])
    ds.DimensionOrganizationType = "3D"
    index = Dataset()
    index.DimensionOrganizationUID = organization_uid
    index.DimensionIndexPointer = Tag("ImagePositionPatient")
    index.FunctionalGroupPointer = Tag("PlanePositionSequence")
    index.DimensionDescriptionLabel = "Image Position"
    ds.DimensionIndexSequence = Sequence([index])


def _source_study(plan: SeriesPlan, instances_keyword: str) -> Dataset:
    """Hierarchical reference to every source instance (their study is not the output's, which is new)."""
    instances = list(dict.fromkeys((cls, uid) for cls, uid, _ in plan.all_sources))
    series = Dataset()
    series.SeriesInstanceUID = plan.source_series_uid
    setattr(series, instances_keyword, Sequence([_instance(cls, uid) for cls, uid in instances]))
    study = Dataset()
    study.StudyInstanceUID = plan.source_study_uid
    study.ReferencedSeriesSequence = Sequence([series])
    return study


def _instance(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item
