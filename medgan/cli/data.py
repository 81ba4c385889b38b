"""`medgan phantom`."""

from __future__ import annotations

import click

from medgan.cli import cli


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
