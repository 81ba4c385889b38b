"""What `medgan evaluate` says about its inputs: an option that would be ignored is refused, a file in
a format medgan does not read is named as such, and every skipped file is reported once."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

import medgan.metrics.evaluate as evaluate
from medgan.data.phantoms import PHANTOMS
from medgan.errors import ConfigError
from medgan.io import write_image


def write_set(folder, seeds, spatial_dims=2, shape=(48, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image = PHANTOMS.build("ct_body", spatial_dims=spatial_dims, seed=seed, shape=shape)
        write_image(image, folder / f"s{seed:03d}.nii.gz")
        (folder / f"s{seed:03d}.json").write_text(json.dumps({"Modality": "CT"}))
    return folder


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()


def one_error_line(status, err) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("medgan: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def sets_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets3d")
    write_set(root / "real", range(3), spatial_dims=3, shape=(32, 32, 16))
    write_set(root / "fake", range(10, 13), spatial_dims=3, shape=(32, 32, 16))
    return root


@pytest.fixture
def no_pass_over_the_sets(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the sets were read although an option was refused")

    monkeypatch.setattr(evaluate, "collect_set", never)


@pytest.mark.parametrize("mode", ["auto", "native"])
def test_slices_per_plane_is_refused_when_3d_sets_are_scored_natively(
    mode, sets_3d, tmp_path, run_cli, no_pass_over_the_sets
):
    # random_cnn builds a 3D network, so auto scores 3D sets natively: no slice is ever taken
    status, _, err = run_cli(
        "evaluate", "--real", sets_3d / "real", "--fake", sets_3d / "fake", "--out", tmp_path / "r",
        "--metrics", "fd", "--mode", mode, "--slices-per-plane", 4, "--no-progress", "--extractor", "random_cnn",
    )  # fmt: skip
    line = one_error_line(status, err)
    assert "--slices-per-plane applies to 2.5D scoring only" in line
    assert "random_cnn scores these 3D images natively" in line and "--mode 2.5d" in line
    assert not (tmp_path / "r").exists()


def test_slices_per_plane_is_refused_for_2d_sets_and_without_features(
    sets_3d, tmp_path, run_cli, no_pass_over_the_sets
):
    real, fake = write_set(tmp_path / "real", range(3)), write_set(tmp_path / "fake", range(10, 13))
    common = ["--out", tmp_path / "r", "--slices-per-plane", 0, "--no-progress"]
    status, _, err = run_cli("evaluate", "--real", real, "--fake", fake, "--metrics", "fd", *common)
    assert "--slices-per-plane applies to 2.5D scoring of 3D images; these images are 2D" in one_error_line(status, err)
    status, _, err = run_cli(
        "evaluate", "--real", sets_3d / "real", "--fake", sets_3d / "fake", "--metrics", "intensity", *common
    )
    line = one_error_line(status, err)
    assert "--slices-per-plane applies to 2.5D scoring of features; none of intensity uses features" in line


def test_slices_per_plane_is_used_in_2_5d_and_its_default_needs_no_option(sets_3d, tmp_path):
    record = evaluate.evaluate_sets(
        sets_3d / "real", sets_3d / "fake", tmp_path / "a", metrics=["fd"], mode="2.5d",
        extractor_options={"input_size": 32}, slices_per_plane=2, progress=False, extractor="random_cnn",
    )  # fmt: skip
    assert record["options"]["slices_per_plane"] == 2 and record["extractor"]["slices_per_plane"] == 2
    record = evaluate.evaluate_sets(
        sets_3d / "real", sets_3d / "fake", tmp_path / "b", metrics=["fd"], mode="2.5d",
        extractor_options={"input_size": 32}, progress=False, extractor="random_cnn",
    )  # fmt: skip
    assert record["options"]["slices_per_plane"] == 32  # the documented default
    with pytest.raises(ConfigError, match="--slices-per-plane applies to 2.5D scoring only"):
        evaluate.evaluate_sets(sets_3d / "real", sets_3d / "fake", tmp_path / "c", metrics=["fd"], slices_per_plane=8,
                               extractor="random_cnn")  # fmt: skip
    with pytest.raises(ConfigError, match="--slices-per-plane must be 0 .every slice. or more; got -1"):
        evaluate.evaluate_sets(
            sets_3d / "real", sets_3d / "fake", tmp_path / "d", metrics=["fd"], mode="2.5d", slices_per_plane=-1
        )


def test_a_png_in_a_set_is_named_as_an_unsupported_format(tmp_path):
    real = write_set(tmp_path / "real", range(3))
    (real / "preview.png").write_bytes(png_bytes())
    (real / "notes.docx").write_bytes(b"PK\x03\x04" + bytes(200))
    (real / "IM0001").write_bytes(bytes(range(256)) * 4)  # no suffix: meant to be DICOM, and is not
    fake = write_set(tmp_path / "fake", range(10, 13))
    record = evaluate.evaluate_sets(real, fake, tmp_path / "r", metrics=["intensity"], progress=False)
    readable = "medgan reads only DICOM, NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd)"
    assert record["inputs"]["real"]["skipped"] == [
        "IM0001: not a DICOM file (no SOP Class UID and no image attributes)",
        f"notes.docx: unsupported format .docx: not a DICOM file, and {readable}",
        f"preview.png: unsupported format .png: not a DICOM file, and {readable}",
    ]
    assert record["inputs"]["real"]["count"] == 3


def test_a_skipped_file_is_reported_once(tmp_path, run_cli, caplog):
    real = write_set(tmp_path / "real", range(3))
    (real / "preview.png").write_bytes(png_bytes())
    fake = write_set(tmp_path / "fake", range(10, 13))
    caplog.set_level(logging.INFO)
    status, _, err = run_cli(
        "evaluate", "--real", real, "--fake", fake, "--out", tmp_path / "r", "--metrics", "intensity", "--no-progress"
    )
    assert status == 0, err
    # the run's warning (also in metrics.json and the report) names it; the log does not repeat it
    logged = [r.getMessage() for r in caplog.records if "preview.png" in r.getMessage()]
    printed = [line for line in err.splitlines() if "preview.png" in line]
    assert logged == [] and len(printed) == 1, (logged, printed)
    assert printed[0].startswith("medgan: warning: real set: skipped 1 unreadable file(s): preview.png: ")
