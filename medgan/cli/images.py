"""`medgan info` and `medgan convert`."""

from __future__ import annotations

import json

import click

from medgan.cli import cli
from medgan.errors import MedganError


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--headers-only", is_flag=True, help="DICOM: read headers only (fast; no intensity range).")
@click.option("--skip-invalid", is_flag=True, help="Skip unreadable or non-DICOM files instead of failing.")
@click.option("--allow-gaps", is_flag=True, help="Describe a series with missing slices (warning) instead of failing.")
def info(path: str, as_json: bool, headers_only: bool, skip_invalid: bool, allow_gaps: bool) -> None:
    """Describe every image or DICOM series under PATH.

    For each: format, modality, shape, spacing (mm), orientation (the direction each array
    axis points to, e.g. LPS), origin (centre of the first voxel, RAS mm), intensity range,
    series UID and slice count. Patient identity is never printed.
    """
    from medgan.io import find_images
    from medgan.io.summary import summarize

    found, _ = find_images(path, skip_invalid=skip_invalid)  # skipped files are logged as warnings
    records, failures = [], []
    for image in found:
        try:
            records.append(summarize(image, pixels=not headers_only, allow_gaps=allow_gaps))
        except MedganError as err:
            failures.append(str(err))
    if as_json:
        click.echo(json.dumps(records, indent=2))
    else:
        _print_table(records)
    if not records and not failures:
        raise MedganError("no images found", path=path)
    if failures:
        for line in failures[:-1]:
            click.echo(f"medgan: error: {line}", err=True)
        raise MedganError(failures[-1])


@cli.command()
@click.argument("source", type=click.Path(path_type=str))
@click.argument("output", type=click.Path(path_type=str))
@click.option("--series", help="SeriesInstanceUID (or UID:n key from `medgan info`) to convert from a folder.")
@click.option(
    "--to", "to", type=click.Choice(["nifti", "nrrd", "mha", "dicom"]), help="Output format (default: by suffix)."
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--allow-gaps", is_flag=True, help="Interpolate across missing slices instead of failing.")
@click.option("--skip-invalid", is_flag=True, help="Skip unreadable or non-DICOM files in a folder.")
@click.option("--modality", type=click.Choice(["CT", "MR"], case_sensitive=False), help="DICOM output: modality.")
@click.option("--multiframe", is_flag=True, help="DICOM output: one enhanced multi-frame file, not a file a slice.")
@click.option("--copy-patient", is_flag=True, help="DICOM output: copy the source's patient identity.")
@click.option("--synthetic", is_flag=True, help="DICOM output: mark the images as synthetic (SyntheticData=YES).")
def convert(
    source: str,
    output: str,
    series: str | None,
    to: str | None,
    overwrite: bool,
    allow_gaps: bool,
    skip_invalid: bool,
    modality: str | None,
    multiframe: bool,
    copy_patient: bool,
    synthetic: bool,
) -> None:
    """Convert SOURCE (DICOM file/folder/DICOMDIR, NIfTI, NRRD, MHA) to OUTPUT.

    The output format follows OUTPUT's suffix (.nii, .nii.gz, .nrrd, .mha); `--to dicom`
    writes a DICOM series into the folder OUTPUT. Geometry is kept exactly; a folder holding
    several series needs --series.
    """
    from medgan.io import MultipleSeriesError, read_image, write_image
    from medgan.io.atomic import check_apart

    check_apart(output, [("source", source)], advice="another OUTPUT")
    dicom_options = {}
    if to == "dicom":
        dicom_options = {"modality": modality, "copy_patient": copy_patient, "synthetic": synthetic or None}
        if multiframe:
            dicom_options["multiframe"] = True
    elif modality or multiframe or copy_patient or synthetic:
        raise click.UsageError("--modality, --multiframe, --copy-patient and --synthetic need --to dicom")
    try:
        image = read_image(source, series=series, allow_gaps=allow_gaps, skip_invalid=skip_invalid)
    except MultipleSeriesError as err:
        for s in err.series:
            description = s.attributes.get("SeriesDescription", "")
            click.echo(f"  {s.key}  {s.modality or '?':3} {len(s.frames):5d} frames  {description}", err=True)
        raise
    files = image.meta.get("files") or []  # a DICOMDIR's files lie beside it
    check_apart(output, [("source file", f) for f in files], advice="another OUTPUT")
    written = write_image(image, output, to=to, overwrite=overwrite, **dicom_options)
    click.echo(written)


def _print_table(records: list[dict]) -> None:
    for record in records:
        shape = "x".join(str(v) for v in record["shape"])
        spacing = " x ".join(f"{v:g}" for v in record["spacing_mm"])
        origin = ", ".join(f"{v:.2f}" for v in record["origin_mm"])
        value_range = "(not read)" if record["range"] is None else f"[{record['range'][0]}, {record['range'][1]}]"
        lines = [
            f"{record['path']}",
            f"  format       {record['format']}   modality {record['modality'] or '-'}",
            f"  shape        {shape}  ({record['channels']} channel{'s' if record['channels'] > 1 else ''}, "
            f"{record['slices']} slice{'s' if record['slices'] > 1 else ''})",
            f"  spacing      {spacing} mm",
            f"  orientation  {record['orientation']}   origin ({origin}) mm RAS",
            f"  range        {value_range} {record['dtype'] or ''}",
        ]
        if record.get("series_uid"):
            key = f"  (key {record['series_key']})" if "series_key" in record else ""
            lines.append(f"  series       {record['series_uid']}{key}  {record.get('description') or ''}".rstrip())
        lines += [f"  warning      {w}" for w in record.get("warnings", [])]
        click.echo("\n".join(lines))
