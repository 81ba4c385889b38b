"""`medgan anonymize` and `medgan phi-scan`."""

from __future__ import annotations

import sys

import click

from medgan.cli import cli


@cli.command()
@click.argument("source", metavar="IN", type=click.Path(path_type=str))
@click.argument("output", metavar="OUT", type=click.Path(path_type=str))
@click.option("--recipe", type=click.Path(path_type=str), help="YAML recipe: options, allow-lists, pixel regions.")
@click.option(
    "--secret-file",
    type=click.Path(path_type=str),
    help="Project secret (default: $MEDGAN_SECRET_FILE or ~/.config/medgan/anonymize.secret, created once).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker processes.")
@click.option("--quiet", is_flag=True, help="Print only the summary, not one line per failed input.")
def anonymize(source: str, output: str, recipe: str | None, secret_file: str | None, workers: int, quiet: bool):
    """De-identify IN (file, folder or DICOMDIR) into OUT with the DICOM PS3.15 Basic Profile.

    A folder is walked recursively, following symbolic links, skipping hidden files and folders;
    an IN with no file to de-identify is a usage error (and creates no OUT). OUT is laid out as
    PSEUDONYM/STUDY-UID/SERIES-UID/SOP-UID.dcm (new UIDs) and gets report.csv, one row per
    input: ok, quarantined or failed, with the reason. IN is never written. Rerunning the same
    command resumes an interrupted run. Exit status: 0 when no input failed (quarantined inputs
    are expected), 1 when any failed, 2 on a usage error.
    """
    from medgan.anonymize.batch import anonymize_tree
    from medgan.anonymize.recipe import load_policy

    policy = load_policy(recipe, secret_file)
    summary = anonymize_tree(source, output, policy, workers=workers)
    if not quiet:
        for path, reason in summary.failures:
            click.echo(f"medgan: failed: {path}: {reason}", err=True)
    click.echo(
        f"{summary.ok} ok, {summary.quarantined} quarantined, {summary.failed} failed"
        + (f", {summary.resumed} done before" if summary.resumed else "")
        + f"; report: {output}/report.csv"
    )
    if summary.any_failed:
        sys.exit(1)


@cli.command(name="phi-scan")
@click.argument("folder", metavar="DIR", type=click.Path(exists=True, path_type=str))
@click.option(
    "--original", type=click.Path(exists=True, path_type=str), help="The originals, to look for their values."
)
@click.option(
    "--secret-file",
    type=click.Path(path_type=str),
    help="With --original: the secret of the run, to link each output to its original by UID.",
)
@click.option("--limit", type=click.IntRange(min=0), default=200, show_default=True, help="Findings to print (0: all).")
def phi_scan(folder: str, original: str | None, secret_file: str | None, limit: int) -> None:
    """Check a de-identified DIR: attributes the profile says must go, private tags, markers.

    Every file is read, hidden ones included and symbolic links followed; only OUT's report.csv
    and work folder are skipped. With --original, also any value or instance UID of the originals
    that must not survive, anywhere in the output. Findings name the file and attribute, never the
    value. Exit status 1 when anything is found, 0 when the tree is clean, 2 on a usage error (a DIR
    or --original without any file included).
    """
    from medgan.anonymize.recipe import load_secret
    from medgan.anonymize.verify import phi_scan as scan

    secret = load_secret(secret_file) if secret_file else None
    findings, scanned = scan(folder, original, secret)
    for finding in findings[: limit or None]:
        click.echo(str(finding))
    if limit and len(findings) > limit:
        click.echo(f"... and {len(findings) - limit} more")
    click.echo(f"{scanned} files scanned, {len(findings)} finding{'s' if len(findings) != 1 else ''}")
    if findings:
        sys.exit(1)
