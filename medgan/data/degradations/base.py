"""What every degradation shares: parameter specs, severity, validated settings and parameter records.

A degradation is built once with its settings (severity, explicit physical values or ranges), then

    records = degradation.sample(batch, generator, spacing_mm)   # small JSON-able dicts, one per item
    y = degradation.apply(x, records, spacing_mm)                # deterministic given the records

so a record replays exactly (the noise of each item comes from the integer `noise_seed` it holds).
Severity is one number in [0, 1] (or a range to draw it from) mapped onto each parameter that
has a mild and a severe end; an explicit value (or range) for a parameter overrides it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medgan.errors import ConfigError

__all__ = [
    "Degradation",
    "Param",
    "as_batch_records",
    "check_spacing",
    "item_generator",
    "make_generator",
    "restore_dtype",
    "spatial_axis",
    "spatial_shape_of",
    "working_dtype",
]

_SEED_LIMIT = 2**62  # per-item noise seeds: plain JSON integers, exact in every JSON reader that keeps int64


@dataclass(frozen=True)
class Param:
    """One parameter of a degradation: its unit, valid range and how severity maps onto it.

    kind: "float", "int", "choice" or "bool". A float or int parameter with `mild` and `severe`
    follows severity (geometrically between them when `log`); otherwise `default` applies.
    `per_spacing`: severity values are multiples of the input's spacing along the degradation's
    axis (a slice thickness of "3 x spacing"), resolved to millimetres when a record is sampled.
    """

    name: str
    unit: str
    help: str
    kind: str = "float"
    low: float | None = None
    high: float | None = None
    mild: float | None = None
    severe: float | None = None
    log: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    per_spacing: bool = False

    @property
    def follows_severity(self) -> bool:
        return self.mild is not None and self.severe is not None

    def at_severity(self, severity: float) -> float:
        """The value at `severity` in [0, 1] (before any per-spacing scaling)."""
        mild, severe = float(self.mild), float(self.severe)
        if self.log:
            return math.exp(math.log(mild) + severity * (math.log(severe) - math.log(mild)))
        return mild + severity * (severe - mild)

    def valid_text(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "true or false"
        unit = f" {self.unit}" if self.unit else ""
        return f"[{self.low:g}, {self.high:g}]{unit}"

    def check(self, value: Any, owner: str) -> Any:
        """`value` converted to this parameter's type; one-line ConfigError when it is invalid."""
        where = f"{owner}: parameter {self.name}"
        if self.kind == "choice":
            if str(value) not in self.choices:
                raise ConfigError(f"{where} = {value!r} is not valid (valid: {self.valid_text()})")
            return str(value)
        if self.kind == "bool":
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                return value.lower() in ("true", "yes", "1", "on")
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ConfigError(f"{where} = {value!r} is not valid (valid: true or false)")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} = {value!r} is not a number (valid: {self.valid_text()})") from None
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise ConfigError(f"{where} = {value!r} is out of range (valid: {self.valid_text()})")
        if self.kind == "int":
            if number != int(number):
                raise ConfigError(f"{where} = {value!r} is not a whole number (valid: {self.valid_text()})")
            return int(number)
        return number


def make_generator(seed_or_generator: int | torch.Generator | None) -> torch.Generator:
    """A CPU generator for drawing records: from a seed, as given, or a fresh one seeded from torch's RNG."""
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    generator = torch.Generator()
    if seed_or_generator is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed_or_generator))
    return generator


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def spatial_shape_of(x: torch.Tensor, owner: str) -> tuple[int, ...]:
    """The spatial shape of a `[B, C, *spatial]` batch with 2 or 3 spatial axes."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{owner} takes a [B, C, *spatial] tensor with 2 or 3 spatial axes, got {shape}")
    return tuple(x.shape[2:])


def as_batch_records(records: dict | Sequence[dict], batch: int, owner: str) -> list[dict]:
    """One record per batch item: a single dict is used for every item."""
    records = [records] * batch if isinstance(records, dict) else list(records)
    if len(records) != batch:
        raise ValueError(f"{owner}: {len(records)} records for a batch of {batch}")
    for record in records:
        if record.get("kind") != owner:
            raise ValueError(f"{owner}: a record of kind {record.get('kind')!r} cannot be applied here")
    return records


class Degradation:
    """Base class: subclasses declare `name`, `params` (and `axis_param`, `changes_grid` where they apply)
    and implement `apply` (and `output_geometry` when the grid changes).

    severity: a number in [0, 1], a (low, high) range to draw one per item from, or None for
        the default 0.5. Every other keyword names a parameter: a number fixes it, a (low, high)
        pair draws it per item; either overrides severity for that parameter.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    changes_grid: ClassVar[bool] = False  # True when the output grid may differ from the input's
    axis_param: ClassVar[str | None] = None  # the parameter naming the spatial axis per-spacing values refer to
    default_severity: ClassVar[float] = 0.5

    def __init__(self, severity: float | Sequence[float] | None = None, **values: Any):
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown parameter {unknown[0]!r} (its parameters: {', '.join(known) or 'none'})"
            )
        unit_range = Param("severity", "", "0 mild .. 1 severe", "float", 0, 1)
        self.severity = self._range("severity", severity, self.default_severity, unit_range)
        self.values: dict[str, Any] = {}
        for param in self.params:
            value = values.get(param.name)
            if value is None:
                continue
            if isinstance(value, (tuple, list)) and param.kind in ("float", "int"):
                self.values[param.name] = self._range(param.name, value, None, param)
            else:
                self.values[param.name] = param.check(value, self.name)

    def _range(self, name: str, value: Any, default: float | None, param: Param) -> tuple[float, float] | None:
        """A fixed number as (v, v), a pair as (low, high); each end checked against `param`."""
        if value is None:
            return None if default is None else (default, default)
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ConfigError(f"{self.name}: parameter {name} takes a number or a (low, high) pair, got {value!r}")
            low, high = (param.check(v, self.name) for v in value)
            if low > high:
                raise ConfigError(f"{self.name}: parameter {name} range ({low:g}, {high:g}) has low above high")
            return (low, high)
        number = param.check(value, self.name)
        return (number, number)

    def setting(self, name: str) -> Any:
        """A parameter's fixed value: explicit, or its default (for parameters that do not follow severity)."""
        if name in self.values:
            return self.values[name]
        return next(p for p in self.params if p.name == name).default

    def sample(
        self,
        batch: int = 1,
        generator: int | torch.Generator | None = None,
        spacing_mm: Sequence[float] | None = None,
        spatial_dims: int | None = None,
    ) -> list[dict]:
        """Draw one parameter record per batch item (plain JSON-able dicts).

        spacing_mm: the voxel spacing along each spatial axis, for parameters given as multiples of it
            and recorded in the record; spatial_dims: 2 or 3 when no spacing is given.
        """
        generator = make_generator(generator)
        dims = len(spacing_mm) if spacing_mm is not None else (spatial_dims or 2)
        if dims not in (2, 3):
            raise ValueError(f"{self.name}: 2 or 3 spatial dimensions, got {dims}")
        records = []
        for _ in range(batch):
            severity = _uniform(generator, *self.severity)
            steered = any(p.follows_severity and p.name not in self.values for p in self.params)
            record: dict[str, Any] = {"kind": self.name, "severity": round(severity, 6) if steered else None}
            for param in self.params:
                record[param.name] = self._draw(param, severity, generator, spacing_mm, dims)
            record.update(self.sample_extra(record, generator, dims, spacing_mm))
            record["noise_seed"] = int(torch.randint(0, _SEED_LIMIT, (), generator=generator))
            records.append(record)
        return records

    def _draw(self, param: Param, severity: float, generator, spacing_mm, dims: int) -> Any:
        explicit = self.values.get(param.name)
        if isinstance(explicit, tuple):
            value = _uniform(generator, *explicit)
            return round(value) if param.kind == "int" else value
        if explicit is not None:
            return explicit
        if not param.follows_severity:
            return param.default
        value = param.at_severity(severity)
        if param.per_spacing:
            axis = self.setting(self.axis_param) if self.axis_param else -1
            axis = spatial_axis(axis, dims, self.name, self.axis_param or "axis")
            value *= 1.0 if spacing_mm is None else float(spacing_mm[axis])  # 1 mm voxels, as in apply
            value = min(max(value, param.low), param.high)
        return round(value) if param.kind == "int" else value

    def check_record(self, record: dict) -> dict:
        """A copy of a record from elsewhere (a JSON file) with each parameter checked against its range."""
        missing = [p.name for p in self.params if p.name not in record] + [
            k for k in ("kind", "noise_seed") if k not in record
        ]
        if missing:
            raise ConfigError(f"{self.name}: the record lacks {', '.join(missing)}")
        checked = dict(record)
        for param in self.params:
            if record[param.name] is not None:
                checked[param.name] = param.check(record[param.name], self.name)
        return checked

    def sample_extra(self, record: dict, generator: torch.Generator, spatial_dims: int, spacing_mm=None) -> dict:
        """Further values a subclass records: drawn (motion poses, field coefficients) or derived from the
        other parameters and the spacing (per-item values that must replay exactly)."""
        return {}

    def apply(self, x: torch.Tensor, records: dict | Sequence[dict], spacing_mm: Sequence[float] | None = None):
        """Degrade `x` `[B, C, *spatial]` as the records say; on x's device, in x's dtype."""
        raise NotImplementedError

    def __call__(
        self,
        x: torch.Tensor,
        spacing_mm: Sequence[float] | None = None,
        generator: int | torch.Generator | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """Sample a record per item and apply them: returns (degraded batch, records)."""
        shape = spatial_shape_of(x, self.name)
        records = self.sample(x.shape[0], generator, spacing_mm, spatial_dims=len(shape))
        return self.apply(x, records, spacing_mm), records

    def output_geometry(self, record: dict, shape: Sequence[int], affine, spacing_mm=None):
        """(spatial shape, 4x4 affine) of the output for an input of `shape` and `affine`."""
        return tuple(shape), affine

    @classmethod
    def describe(cls) -> list[str]:
        """One line per parameter: name, unit, valid range, severity mapping or default."""
        lines = []
        for p in cls.params:
            if p.follows_severity:
                scale = " x spacing" if p.per_spacing else (f" {p.unit}" if p.unit else "")
                how = f"severity 0..1 -> {p.mild:g}..{p.severe:g}{scale}"
            elif p.default is not None:
                how = f"default {str(p.default).lower() if p.kind == 'bool' else p.default}"
            else:
                how = ""  # derived from the image or another parameter: the help says how
            lines.append(f"{p.name}: {p.help} ({p.valid_text()}{'; ' + how if how else ''})")
        return lines


def check_spacing(spacing_mm: Sequence[float] | None, dims: int, owner: str) -> tuple[float, ...]:
    """Spacing per spatial axis (1 mm each when not given); positive and finite."""
    if spacing_mm is None:
        return (1.0,) * dims
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != dims or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{owner}: spacing_mm {spacing_mm} does not give {dims} positive spacings")
    return spacing


def spatial_axis(axis: int, spatial_dims: int, owner: str, name: str) -> int:
    """`axis` (negative counts from the end) as an index into `spatial_dims` axes; one-line error otherwise."""
    if not -spatial_dims <= int(axis) < spatial_dims:
        raise ConfigError(f"{owner}: parameter {name} = {axis} names no axis of a {spatial_dims}D image")
    return int(axis) % spatial_dims


def working_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (bfloat16, float16, integers) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def restore_dtype(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Back to the input's dtype (rounded and clipped for integer inputs)."""
    if like.dtype.is_floating_point:
        return y.to(like.dtype)
    info = torch.iinfo(like.dtype)
    return y.round().clamp(info.min, info.max).to(like.dtype)


def item_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator an item's noise comes from: its record's seed, on the tensor's device."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
