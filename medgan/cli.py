"""The `medgan` command line: parse arguments, make one library call, report.

User errors (`MedganError`, bad options) print one line on stderr and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from medgan import __version__
from medgan.errors import MedganError

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, prog_name="medgan")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """medgan: medical image synthesis, enhancement and lesion simulation with GANs.

    Images are read and written with their geometry intact (DICOM, NIfTI, NRRD, MHA);
    intensities stay in physical units (HU for CT).
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="medgan: %(levelname)s: %(message)s", stream=sys.stderr)


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--headers-only", is_flag=True, help="DICOM: read headers only (fast; no intensity range).")
@click.option("--skip-invalid", is_flag=True, help="Skip unreadable or non-DICOM files instead of failing.")
def info(path: str, as_json: bool, headers_only: bool, skip_invalid: bool) -> None:
    """Describe every image or DICOM series under PATH.

    For each: format, modality, shape, spacing (mm), orientation (the direction each array
    axis points to, e.g. LPS), origin (centre of the first voxel, RAS mm), intensity range,
    series UID and slice count. Patient identity is never printed.
    """
    from medgan.io import find_images
    from medgan.io.summary import summarize

    found, problems = find_images(path, skip_invalid=skip_invalid)
    records, failures = [], []
    for image in found:
        try:
            records.append(summarize(image, pixels=not headers_only))
        except MedganError as err:
            failures.append(str(err))
    if as_json:
        click.echo(json.dumps(records, indent=2))
    else:
        _print_table(records)
    for problem in problems:
        click.echo(f"medgan: skipped {problem}", err=True)
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
    written = write_image(image, output, to=to, overwrite=overwrite, **dicom_options)
    click.echo(written)


@cli.command()
@click.argument("output", type=click.Path(path_type=str))
@click.option("-c", "--config", "config_path", type=click.Path(path_type=str), help="YAML config (PhantomConfig).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. seed=3.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and write nothing.")
@click.option(
    "--to", "to", type=click.Choice(["nifti", "nrrd", "mha", "dicom"]), help="Output format (default: by suffix)."
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def phantom(
    output: str, config_path: str | None, overrides: tuple[str, ...], dry_run: bool, to: str | None, overwrite: bool
) -> None:
    """Write a procedural phantom (CT body/head in HU, T1 MR brain) to OUTPUT.

    Same config and seed, same voxels. Kinds: ct_body, ct_head, mr_brain; e.g.
    `medgan phantom ct.nii.gz --set kind=ct_body --set spatial_dims=2 --set seed=4`.
    `--to dicom` writes a series (SyntheticData YES) into the folder OUTPUT.
    """
    from medgan.config import dump_config, load_config
    from medgan.data.phantoms import PhantomConfig, write_phantom

    cfg = load_config(PhantomConfig, config_path, overrides)
    if dry_run:
        click.echo(dump_config(cfg), nl=False)
        return
    click.echo(write_phantom(cfg, output, to=to, overwrite=overwrite))


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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `medgan` console script."""
    try:
        cli.main(args=argv, prog_name="medgan", standalone_mode=False)
    except MedganError as err:
        _fail(str(err))
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else str(err))
        sys.exit(0)
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx else "medgan"
        _fail(f"{command}: {err.format_message()} (see --help)")
    except click.exceptions.Abort:
        _fail("aborted", status=130)
    except KeyboardInterrupt:
        _fail("interrupted", status=130)
    except BrokenPipeError:
        sys.exit(0)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except click.ClickException as err:
        _fail(err.format_message())


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"medgan: error: {' '.join(message.split())}", err=True)
    sys.exit(status)
