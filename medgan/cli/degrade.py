"""`medgan degrade`: simulate a degraded acquisition of a clean scan (or a folder of scans)."""

from __future__ import annotations

import os
import sys

import click

from medgan.cli import cli
from medgan.errors import ConfigError

# The registry's names, listed here so that --help needs no torch import (a test keeps them equal).
KINDS = (
    "ct-lowdose",
    "mr-undersample",
    "mr-noise",
    "mr-gibbs",
    "mr-motion",
    "mr-bias",
    "thick-slices",
    "downsample",
)
# Shortcut options for each kind's main physical parameter.
SHORTCUTS = {
    "dose": "dose",
    "snr": "snr",
    "acceleration": "acceleration",
    "thickness": "thickness_mm",
    "factor": "factor",
}


def _parse_params(pairs: tuple[str, ...]) -> dict:
    import yaml

    params = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        params[name.strip()] = tuple(value) if isinstance(value, list) else value
    return params


@cli.command()
@click.argument("source", metavar="IN", required=False, type=click.Path(path_type=str))
@click.argument("output", metavar="OUT", required=False, type=click.Path(path_type=str))
@click.option("--kind", metavar="KIND", help=f"The degradation: {', '.join(KINDS)}.")
@click.option("--severity", type=float, help="0 (mild) .. 1 (severe): sets every parameter not given (default 0.5).")
@click.option("--dose", type=float, help="ct-lowdose: dose fraction of the full-dose reference (0.001..1).")
@click.option("--snr", type=float, help="mr-noise: reference signal / noise SD.")
@click.option("--acceleration", type=float, help="mr-undersample: k-space lines / acquired lines.")
@click.option("--thickness", type=float, help="thick-slices: slice thickness in mm.")
@click.option("--factor", type=float, help="downsample: output voxel size / input voxel size.")
@click.option("-p", "--param", "param_pairs", multiple=True, metavar="NAME=VALUE",
              help="Any parameter of the kind (repeatable); [LOW, HIGH] draws one per scan.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Draws parameter ranges and the noise.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Repeat the degradation recorded in this JSON (a previous OUT.json) exactly.")  # fmt: skip
@click.option("--series", help="DICOM folder holding several series: the SeriesInstanceUID (or UID:n key) to use.")
@click.option("--to", type=click.Choice(["nifti", "nrrd", "mha", "dicom"]), help="Output format (default: IN's).")
@click.option("--overwrite", is_flag=True, help="Replace OUT (and OUT.json) if they exist.")
@click.option("--copy-patient", is_flag=True, help="DICOM output: copy the source's patient identity.")
@click.option("--list", "list_kinds", is_flag=True, help="List the kinds and their parameters, then exit.")
def degrade(source, output, kind, severity, dose, snr, acceleration, thickness, factor, param_pairs, seed, replay,
            series, to, overwrite, copy_patient, list_kinds) -> None:  # fmt: skip
    """Write a degraded copy of the scan IN to OUT, and OUT.json with the parameters.

    IN is a NIfTI, NRRD or MetaImage file or a DICOM series (file or folder); OUT keeps IN's format
    and geometry (DICOM in: a derived DICOM series folder) unless its suffix or --to says otherwise.
    IN may also be a folder of scans: each is degraded into OUT with the same relative layout, its own
    seed (from --seed and its path) and record; OUT/report.csv lists every scan, and a scan that
    fails is reported while the batch goes on (exit status 1 then).

    \b
    Examples:
      medgan degrade chest_ct/ lowdose_ct/ --kind ct-lowdose --dose 0.25 --seed 0
      medgan degrade t1.nii.gz t1_r4.nii.gz --kind mr-undersample --acceleration 4 -p pattern=equispaced
      medgan degrade t1.nii.gz t1_thick.nii.gz --kind thick-slices --thickness 5
      medgan degrade scans/ noisy/ --kind mr-noise -p "snr=[5, 20]"
    """
    from medgan.data.degradations import DEGRADATIONS

    if list_kinds:
        for name in DEGRADATIONS.names():
            cls = DEGRADATIONS.get(name)
            click.echo(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
            for line in cls.describe():
                click.echo(f"    {line}")
        return
    if source is None or output is None:
        raise click.UsageError("IN and OUT are needed (or --list)")
    from medgan.data.degradations.files import degrade_file, degrade_tree, load_record

    params = _parse_params(param_pairs)
    given = {"dose": dose, "snr": snr, "acceleration": acceleration, "thickness": thickness, "factor": factor}
    record = load_record(replay) if replay else None
    chosen = record["kind"] if record else kind
    if record and (kind or severity is not None or params or any(v is not None for v in given.values())):
        raise click.UsageError("--replay repeats a recorded degradation; drop --kind, --severity and parameters")
    for option, value in given.items():
        if value is None:
            continue
        names = [p.name for p in DEGRADATIONS.get(chosen).params] if chosen in DEGRADATIONS else []
        if chosen in DEGRADATIONS and SHORTCUTS[option] not in names:
            raise ConfigError(f"--{option} does not apply to {chosen} (its parameters: {', '.join(names)})")
        params[SHORTCUTS[option]] = value
    if not os.path.exists(source):
        raise click.BadParameter(f"{source}: no such file or folder", param_hint="IN")
    if os.path.isdir(source) and not replay and series is None and _is_batch(source):

        def progress(i: int, n: int, path: str, detail: str, status: str) -> None:
            click.echo(f"[{i}/{n}] {status}: {path} -> {detail}" if status == "ok" else
                       f"[{i}/{n}] failed: {path}: {detail}", err=True)  # fmt: skip

        summary = degrade_tree(source, output, chosen, seed, severity, params, to, overwrite, progress, copy_patient)
        for path, reason in summary.failures:
            click.echo(f"medgan: failed: {path}: {reason}", err=True)
        click.echo(f"{len(summary.ok)} degraded, {len(summary.failures)} failed; report: {summary.report}")
        if summary.failures:
            sys.exit(1)
        return
    degrade_file(source, output, chosen, seed, severity, params, record, to, overwrite, series,
                 copy_patient=copy_patient)  # fmt: skip
    click.echo(output)


def _is_batch(folder: str) -> bool:
    """A folder is a batch unless it is one DICOM series itself (all its DICOM files one volume)."""
    from medgan.io import find_images

    found, _ = find_images(folder, skip_invalid=True)
    return not (len(found) == 1 and found[0].format == "dicom" and os.path.samefile(found[0].source, folder))
