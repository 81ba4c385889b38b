"""Learned lesion content: an inpaint checkpoint paints inside the procedural shape, under the same control."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch
from test_lesion_control import _spacing, check_control

from medgan.errors import InputError
from medgan.io import write_image
from medgan.lesions.insert import replay_lesions, simulate_lesions
from medgan.lesions.learned import LearnedRenderer
from medgan.lesions.models import LESION_MODELS
from medgan.lesions.record import record_from_dict


def test_learned_lesions_match_the_request_and_name_their_checkpoint(ct_body, inpaint_checkpoint):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    renderer = LearnedRenderer(inpaint_checkpoint)
    assert renderer.context_mm == pytest.approx(64.0)  # half of 32 pixels of 4 mm
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(10, 18))
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=2, model=model, seed=5,
                              renderer=renderer)  # fmt: skip
    check_control(image, result, liver[0].numpy(), _spacing(image))  # size, contrast, containment, untouched
    with open(inpaint_checkpoint, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    for record in result.records:
        assert record.renderer == "learned"
        assert record.rendered["checkpoint"] == inpaint_checkpoint and record.rendered["checkpoint_sha256"] == digest
        assert record.rendered["checkpoint_step"] == 3
    saved = [record_from_dict(json.loads(json.dumps(r.to_dict()))) for r in result.records]
    again = replay_lesions(image, liver, saved, affine=image.affine)  # the renderer rebuilt from the records
    assert torch.equal(again.image, result.image) and torch.equal(again.labels, result.labels)


def test_a_learned_record_replays_only_with_the_same_checkpoint(ct_body, inpaint_checkpoint, tmp_path):
    image, tissues_map, tissues = ct_body
    liver = tissues_map[None] == tissues.index("liver")
    copy = str(tmp_path / "copy.pt")
    shutil.copy(inpaint_checkpoint, copy)
    model = LESION_MODELS.build("ct-liver-hypo", diameter_mm=(10, 14))
    result = simulate_lesions(image, liver, affine=image.affine, modality="CT", n=1, model=model, seed=1,
                              renderer=LearnedRenderer(copy))  # fmt: skip
    state = torch.load(copy, weights_only=True)
    state["step"] = 4
    torch.save(state, copy)  # the same path now holds another checkpoint
    with pytest.raises(InputError, match="painted by another version of"):
        replay_lesions(image, liver, result.records, affine=image.affine)
    os.remove(copy)
    with pytest.raises(InputError, match="which is not there"):
        replay_lesions(image, liver, result.records, affine=image.affine)


def test_the_command_takes_an_inpaint_checkpoint_as_its_model(run_cli, ct_body, inpaint_checkpoint, tmp_path):
    image, tissues_map, tissues = ct_body
    write_image(image, tmp_path / "ct.nii.gz")
    from medgan.io.image import make_image

    write_image(make_image(tissues_map[None].numpy(), image.affine.numpy(), {}), tmp_path / "seg.nii.gz")
    args = [str(tmp_path / "ct.nii.gz"), "--organ-mask", str(tmp_path / "seg.nii.gz"), "--label",
            str(tissues.index("liver")), "--preset", "ct-liver-hypo", "--n", "1", "--diameter-mm", "10:14",
            "--model", inpaint_checkpoint, "--seed", "2"]  # fmt: skip
    status, _, err = run_cli("simulate-lesions", *args, "--out", str(tmp_path / "out"))
    assert status == 0, err
    saved = json.loads((tmp_path / "out" / "ct_lesion_records.json").read_text())
    assert saved["lesions"][0]["renderer"] == "learned" and saved["lesions"][0]["rendered"]["checkpoint"]
