"""Instance UIDs in UI attributes that Table E.1-1 does not list get the same keyed UIDs; class and
syntax identifiers stay; phi-scan finds an original instance UID in any UI attribute."""

from __future__ import annotations

import copy

import external
import pydicom
import pytest
from _corpus import SECRET, read
from _corpus import policy as make_policy
from pydicom.datadict import DicomDictionary

from medgan.anonymize.passes import Deidentifier
from medgan.anonymize.profile import action_table
from medgan.anonymize.uids import UidMapper, is_instance_uid_attribute

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PRIVATE_CLASS = "1.2.840.113619.4.30"  # a vendor's own SOP class: not well-known, yet a class


def extra_uids() -> pydicom.Dataset:
    """CT_small with instance UIDs in attributes the table does not list, and class UIDs beside them."""
    ds = read(external.pydicom_file("CT_small.dcm"))
    ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID
    ds.TargetFrameOfReferenceUID = ds.FrameOfReferenceUID
    item = pydicom.Dataset()
    item.RadiopharmaceuticalAdministrationEventUID = ds.StudyInstanceUID + ".777"
    ds.RadiopharmaceuticalInformationSequence = [item]
    source = pydicom.Dataset()
    source.ReferencedSOPClassUID = PRIVATE_CLASS
    source.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.SourceImageSequence = [source]
    ds.file_meta.RTVCommunicationSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_unlisted_instance_uids_are_keyed_and_references_hold():
    original = extra_uids()
    ds = copy.deepcopy(original)
    Deidentifier(make_policy())(ds)
    keyed = UidMapper(SECRET)
    assert ds.SOPInstanceUID == keyed(original.SOPInstanceUID)
    assert ds.SOPInstanceUIDOfConcatenationSource == ds.SOPInstanceUID
    assert ds.TargetFrameOfReferenceUID == ds.FrameOfReferenceUID != original.FrameOfReferenceUID
    event = ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalAdministrationEventUID
    assert event == keyed(original.StudyInstanceUID + ".777") and event.startswith("2.25.")
    assert ds.file_meta.RTVCommunicationSOPInstanceUID == ds.SOPInstanceUID
    # Definitions, not instances: kept even when they are not well-known.
    assert ds.SourceImageSequence[0].ReferencedSOPClassUID == PRIVATE_CLASS
    assert ds.SOPClassUID == original.SOPClassUID
    # The writer's own, not the input's (DCMTK reuses its implementation UID as InstanceCreatorUID).
    assert ds.file_meta.ImplementationClassUID == pydicom.uid.PYDICOM_IMPLEMENTATION_UID


def test_retain_uids_keeps_the_unlisted_ones_too():
    original = extra_uids()
    ds = copy.deepcopy(original)
    Deidentifier(make_policy(retain_uids=True))(ds)
    assert ds.TargetFrameOfReferenceUID == original.TargetFrameOfReferenceUID
    assert ds.SOPInstanceUIDOfConcatenationSource == original.SOPInstanceUID


def test_the_rule_keeps_only_definition_identifiers():
    table = action_table(frozenset())
    kept = {v[4] for tag, v in DicomDictionary.items() if v[0] == "UI" and not is_instance_uid_attribute(tag)}
    assert {"SOPClassUID", "TransferSyntaxUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID"} <= kept
    assert all(("Class" in k or "Syntax" in k or "UID" in k) for k in kept)
    replaced = {"TargetFrameOfReferenceUID", "SOPInstanceUIDOfConcatenationSource", "ReferencedFiducialUID"}
    assert not replaced & kept
    # The UI attributes the table replaces (U) are instance identifiers by the same rule, but for one
    # class that the table replaces anyway (a device class can identify the device); the table wins.
    listed_u = {v[4] for tag, v in DicomDictionary.items() if v[0] == "UI" and table.get(tag) == "U"}
    assert len(listed_u) > 40 and listed_u & kept == {"ManufacturerDeviceClassUID"}


def test_phi_scan_finds_an_original_uid_in_an_unlisted_attribute(tmp_path, run_cli):
    originals = tmp_path / "originals"
    originals.mkdir()
    original = extra_uids()
    original.save_as(originals / "ct.dcm")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    assert run_cli("anonymize", originals, tmp_path / "out", "--secret-file", secret)[0] == 0
    status, out, _ = run_cli("phi-scan", tmp_path / "out", "--original", originals, "--secret-file", secret)
    assert status == 0, out
    (output,) = (tmp_path / "out").rglob("*.dcm")
    ds = read(output)
    ds.TargetFrameOfReferenceUID = original.FrameOfReferenceUID  # as the old passes left it
    ds.ReferencedImageSequence = [pydicom.Dataset()]
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = original.SOPInstanceUID  # in any UI attribute
    ds.save_as(output)
    status, out, _ = run_cli("phi-scan", tmp_path / "out", "--original", originals, "--secret-file", secret)
    assert status == 1
    assert "original-uid: TargetFrameOfReferenceUID (0018,991E): holds an instance UID of the originals" in out
    assert "original-uid: ReferencedSOPClassUID (0008,1150)" in out
    assert "TargetFrameOfReferenceUID (0018,991E): UID not replaced" in out
    assert original.FrameOfReferenceUID not in out
