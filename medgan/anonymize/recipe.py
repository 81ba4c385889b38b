"""The de-identification recipe (YAML), the project secret, and the pseudonym mapping CSV.

A recipe selects the Annex E options, the safe-private allow-list, the pixel regions to blank
and the pseudonym source. It is validated once into a `Recipe`, then frozen into a `Policy`
(plain, picklable data) that the passes and the worker processes use.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator

from medgan.anonymize.profile import option_columns
from medgan.config import Section, load_config
from medgan.errors import ConfigError, InputError

__all__ = ["PixelRegion", "Policy", "Recipe", "SafePrivate", "load_policy", "load_secret", "read_mapping"]

log = logging.getLogger(__name__)

DEFAULT_SECRET_FILE = os.path.join("~", ".config", "medgan", "anonymize.secret")
MIN_SECRET_CHARS = 16


class SafePrivate(Section):
    """One private attribute that is safe to keep: its creator, group and element within the block."""

    creator: str  # Private Creator value, e.g. "SIEMENS MR HEADER" (compared without surrounding spaces)
    group: int  # odd group, e.g. 0x0019 (YAML accepts 0x0019)
    element: int = Field(ge=0, le=0xFF)  # offset within the block: (0019,100C) -> 0x0C

    @field_validator("group")
    @classmethod
    def _odd(cls, value: int) -> int:
        if not value % 2 or not 0x0009 <= value <= 0xFFFF:
            raise ValueError("a private group is an odd number between 0x0009 and 0xFFFF")
        return value


class PixelRegion(Section):
    """Boxes to blank in images that match every given criterion (criteria left out match anything)."""

    modality: str | None = None  # e.g. US (case-insensitive)
    manufacturer: str | None = None  # substring of Manufacturer, case-insensitive
    model: str | None = None  # substring of ManufacturerModelName, case-insensitive
    rows: int | None = None  # image height in pixels
    columns: int | None = None  # image width in pixels
    boxes: list[tuple[int, int, int, int]] = Field(min_length=1)  # (x0, y0, x1, y1) pixels, end exclusive

    @field_validator("boxes")
    @classmethod
    def _ordered(cls, boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        for x0, y0, x1, y1 in boxes:
            if not (0 <= x0 < x1 and 0 <= y0 < y1):
                raise ValueError(f"box {[x0, y0, x1, y1]} must satisfy 0 <= x0 < x1 and 0 <= y0 < y1")
        return boxes


class Recipe(Section):
    """What `medgan anonymize` applies; every field has the Basic Profile default."""

    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_longitudinal: Literal["off", "full", "modified"] = "off"
    max_date_shift_days: int = Field(3650, ge=1)  # "modified": dates move back 1..this many days per patient
    clean_descriptors: bool = False
    retain_safe_private: bool = False
    safe_private: list[SafePrivate] = Field(default_factory=list)  # the allow-list used by retain_safe_private
    quarantine_burned_in: bool = True  # False: process such files anyway (you vouch for their pixels)
    burned_in_modalities: list[str] = Field(default_factory=lambda: ["US", "SC", "OT", "XC", "ES"])  # unless NO
    pixel_regions: list[PixelRegion] = Field(default_factory=list)
    patient_mapping: str | None = None  # CSV (original_patient_id,pseudonym), relative to the recipe
    unmapped_patients: Literal["keyed", "fail"] = "keyed"  # with a mapping: what to do with a patient not in it
    pseudonym_prefix: str = Field("ANON", pattern=r"^[A-Z0-9_]{0,16}$")
    sweep_identifiers: bool = True  # also replace this file's identifiers wherever they recur in kept text

    @field_validator("retain_longitudinal", mode="before")
    @classmethod
    def _unquoted_off(cls, value):
        # YAML 1.1 reads an unquoted `off` as False: take it as the word the user wrote
        return "off" if value is False else value


@dataclass(frozen=True)
class Policy:
    """A recipe resolved for running: option columns, secret, mapping. Picklable for worker processes."""

    columns: frozenset[str]
    secret: bytes
    retain_longitudinal: str = "off"
    max_date_shift_days: int = 3650
    safe_private: frozenset[tuple[str, int, int]] = frozenset()  # (creator, group, element offset)
    quarantine_burned_in: bool = True
    burned_in_modalities: frozenset[str] = frozenset({"US", "SC", "OT", "XC", "ES"})
    pixel_regions: tuple[PixelRegion, ...] = ()
    mapping: dict[str, str] = field(default_factory=dict)
    unmapped_patients: str = "keyed"
    pseudonym_prefix: str = "ANON"
    sweep_identifiers: bool = True

    @classmethod
    def from_recipe(cls, recipe: Recipe, secret: bytes, mapping: dict[str, str] | None = None) -> Policy:
        columns = option_columns(
            retain_uids=recipe.retain_uids,
            retain_device_identity=recipe.retain_device_identity,
            retain_institution_identity=recipe.retain_institution_identity,
            retain_patient_characteristics=recipe.retain_patient_characteristics,
            retain_longitudinal=recipe.retain_longitudinal,
            clean_descriptors=recipe.clean_descriptors,
            retain_safe_private=recipe.retain_safe_private,
        )
        return cls(
            columns=columns,
            secret=secret,
            retain_longitudinal=recipe.retain_longitudinal,
            max_date_shift_days=recipe.max_date_shift_days,
            safe_private=frozenset((p.creator.strip(), p.group, p.element) for p in recipe.safe_private),
            quarantine_burned_in=recipe.quarantine_burned_in,
            burned_in_modalities=frozenset(m.upper() for m in recipe.burned_in_modalities),
            pixel_regions=tuple(recipe.pixel_regions),
            mapping=dict(mapping or {}),
            unmapped_patients=recipe.unmapped_patients,
            pseudonym_prefix=recipe.pseudonym_prefix,
            sweep_identifiers=recipe.sweep_identifiers,
        )

    def fingerprint(self) -> str:
        """Identifies secret + settings without revealing the secret (stored with a run, checked on resume)."""
        settings = repr(
            (
                sorted(self.columns),
                self.retain_longitudinal,
                self.max_date_shift_days,
                sorted(self.safe_private),
                self.quarantine_burned_in,
                sorted(self.burned_in_modalities),
                [r.model_dump() for r in self.pixel_regions],
                sorted(self.mapping.items()),
                self.unmapped_patients,
                self.pseudonym_prefix,
                self.sweep_identifiers,
            )
        )
        return hmac.new(self.secret, b"medgan-run-v1\0" + settings.encode(), hashlib.sha256).hexdigest()[:32]


def load_secret(path: str | os.PathLike | None = None) -> bytes:
    """The project secret: `path`, else $MEDGAN_SECRET_FILE, else ~/.config/medgan/anonymize.secret,
    created (mode 0600) on first use. Keep it: the same secret gives the same UIDs and pseudonyms."""
    explicit = path is not None
    path = os.path.expanduser(os.fspath(path or os.environ.get("MEDGAN_SECRET_FILE") or DEFAULT_SECRET_FILE))
    if not os.path.exists(path):
        if explicit:
            raise InputError("secret file not found", path=path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        log.warning("created a new project secret in %s; keep it to map UIDs and pseudonyms the same way", path)
    try:
        with open(path, "rb") as fh:
            secret = fh.read().strip()
    except OSError as err:
        raise InputError(f"cannot read the secret file ({err.strerror or err})", path=path) from None
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(f"the secret must hold at least {MIN_SECRET_CHARS} characters", path=path)
    return secret


def read_mapping(path: str | os.PathLike) -> dict[str, str]:
    """A CSV with columns original_patient_id and pseudonym -> {original: pseudonym}."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = set(reader.fieldnames or [])
            if not {"original_patient_id", "pseudonym"} <= fields:
                raise ConfigError("needs the header columns original_patient_id,pseudonym", path=path)
            mapping: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                original, pseudonym = (row["original_patient_id"] or "").strip(), (row["pseudonym"] or "").strip()
                if not original or not pseudonym or len(pseudonym) > 64 or "\\" in pseudonym:
                    raise ConfigError(f"line {line}: empty value, or a pseudonym longer than 64 characters", path)
                if mapping.get(original, pseudonym) != pseudonym:
                    raise ConfigError(f"line {line}: a patient is mapped twice to different pseudonyms", path)
                mapping[original] = pseudonym
    except FileNotFoundError:
        raise ConfigError("patient mapping file not found", path=path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(f"cannot read the patient mapping ({err.__class__.__name__})", path=path) from None
    return mapping


def load_policy(recipe_path: str | os.PathLike | None = None, secret_path: str | os.PathLike | None = None) -> Policy:
    """Recipe file (or the defaults) + secret + mapping -> Policy."""
    recipe = load_config(Recipe, recipe_path)
    mapping = None
    if recipe.patient_mapping:
        base = os.path.dirname(os.path.abspath(recipe_path)) if recipe_path else os.getcwd()
        mapping = read_mapping(os.path.join(base, os.path.expanduser(recipe.patient_mapping)))
    return Policy.from_recipe(recipe, load_secret(secret_path), mapping)
