from __future__ import annotations

import pytest

from medgan.errors import ConfigError
from medgan.registry import Registry


def test_register_build_and_did_you_mean():
    reg: Registry = Registry("widget")

    @reg.register("unet")
    def unet(depth: int = 2):
        return ("unet", depth)

    @reg.register("resnet")
    def resnet():
        return "resnet"

    assert reg.build("unet", depth=3) == ("unet", 3)
    assert reg.names() == ["resnet", "unet"] == list(reg)
    assert "unet" in reg and len(reg) == 2
    with pytest.raises(ConfigError) as info:
        reg.get("unte")
    assert "did you mean 'unet'" in str(info.value)
    assert "valid: resnet, unet" in str(info.value)
    with pytest.raises(ValueError, match="twice"):
        reg.register("unet")(unet)


def test_unknown_name_without_close_match():
    reg: Registry = Registry("thing")
    with pytest.raises(ConfigError, match="none registered"):
        reg.get("x")
