"""The registry of degradations by short name; entries register themselves when their module is imported."""

from __future__ import annotations

from medgan.registry import Registry

DEGRADATIONS: Registry = Registry("degradation")
