"""Argument and shape checks shared by the networks; every failure is a one-line `ConfigError` naming the fix."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from medgan.errors import ConfigError

# Default output sizes of the latent and label-map generators: 2D slice synthesis and 3D volume synthesis.
DEFAULT_IMAGE_SIZE = {2: (256, 256), 3: (128, 128, 128)}


def check_choice(what: str, value: object, choices: Sequence[object]) -> None:
    """Raise a did-you-mean `ConfigError` unless `value` is one of `choices`."""
    if value in choices:
        return
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {value!r}{hint} (valid: {', '.join(names)})")


def check_spatial_dims(spatial_dims: object) -> int:
    """`spatial_dims` must be 2 or 3."""
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)  # type: ignore[call-overload]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """`value` must be an int >= `minimum` (channel counts, depths, ...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def resolve_image_size(image_size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
    """None -> the default size for `spatial_dims`; an int -> a square/cubic size; a sequence must match dims."""
    if image_size is None:
        return DEFAULT_IMAGE_SIZE[spatial_dims]
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        return (image_size,) * spatial_dims
    size = tuple(image_size)
    if len(size) != spatial_dims or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"image_size must be an int or {spatial_dims} positive ints, got {image_size!r}")
    return size


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def pyramid_plan(image_size: tuple[int, ...], what: str) -> tuple[tuple[int, ...], int]:
    """Base shape and number of x2 steps of a net that grows from (or pools down to) a 4-voxel-per-axis base.

    Every axis must be 4 * 2**k. Axes may differ (e.g. 256x128): the net takes min(k) steps and the base keeps the
    aspect ratio (8x4 for 256x128).
    """
    bad = [s for s in image_size if s < 4 or s % 4 or not _is_pow2(s // 4)]
    if bad:
        s = bad[0]
        below = 4 if s < 8 else 1 << (s.bit_length() - 1)
        valid = ", ".join(str(4 << k) for k in range(9))
        raise ConfigError(
            f"{what} cannot produce image_size {image_size}: every axis must be 4 * 2^n ({valid}, ...); "
            f"for {s} use {below} or {below * 2}"
        )
    steps = min((s // 4).bit_length() - 1 for s in image_size)
    return tuple(s >> steps for s in image_size), steps


def split_input_shape(shape: Sequence[int], spatial_dims: int, channels: int | None, what: str) -> tuple[int, ...]:
    """The spatial part of `shape`, given either as (B, C, *spatial) or as (*spatial); checks C when given."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == spatial_dims:
        return shape
    if len(shape) == spatial_dims + 2:
        if channels is not None and shape[1] != channels:
            raise ConfigError(f"{what} takes {channels} input channel(s), got shape {shape}")
        return shape[2:]
    axes = ", ".join("DHW"[3 - spatial_dims :])
    raise ConfigError(f"{what} takes shape (B, C, {axes}) for spatial_dims={spatial_dims}, got {shape}")


def check_multiple(spatial: tuple[int, ...], multiple: int, what: str, why: str, minimum: int = 0) -> None:
    """Every axis of `spatial` must be a multiple of `multiple` and at least `minimum` (and `multiple`).

    The message names the offending size and the nearest sizes that would work.
    """
    minimum = -(-max(minimum, multiple) // multiple) * multiple  # round up to a multiple
    bad = [s for s in spatial if s < minimum or s % multiple]
    if bad:
        s = bad[0]
        below = max(minimum, s // multiple * multiple)
        above = below if s < minimum else below + multiple
        options = f"{below}" if below == above else f"{below} or {above}"
        raise ConfigError(
            f"{what} cannot take spatial size {spatial}: every axis must be a multiple of {multiple} and at least "
            f"{minimum} ({why}); use {options} instead of {s}"
        )


def check_equal(spatial: tuple[int, ...], expected: tuple[int, ...], what: str) -> None:
    """A fixed-size network: `spatial` must equal the size it was built for."""
    if tuple(spatial) != tuple(expected):
        raise ConfigError(
            f"{what} was built for spatial size {tuple(expected)} and cannot take {tuple(spatial)}; "
            f"resize the input or build it with image_size={tuple(spatial)}"
        )


def check_labels(labels: object, num_classes: int, what: str) -> None:
    """Class labels must be given exactly when the network is class-conditional (a silent mismatch wastes a run)."""
    if num_classes > 0 and labels is None:
        raise ConfigError(f"{what} is class-conditional (num_classes={num_classes}): pass labels")
    if num_classes == 0 and labels is not None:
        raise ConfigError(f"{what} is unconditional (built without num_classes): pass labels=None")


def check_latent_shape(shape: Sequence[int], latent_dim: int, what: str) -> None:
    """A latent generator's input is z of shape (B, latent_dim) (or (latent_dim,) without the batch)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 2) or shape[-1] != latent_dim:
        raise ConfigError(f"{what} takes latents of shape (B, {latent_dim}), got {shape}")


# Default (base_channels, max_channels) of the latent-family networks: channels at full resolution and the cap.
LATENT_CHANNELS = {2: (64, 512), 3: (32, 256)}


def level_channels(steps: int, base_channels: int, max_channels: int) -> list[int]:
    """Channels per pyramid level, from the 4-voxel base (level 0) to full resolution (level `steps`).

    Channels double at every halving of the resolution, up to `max_channels` (StyleGAN's channel_base/res rule).
    """
    return [min(base_channels << (steps - level), max_channels) for level in range(steps + 1)]
