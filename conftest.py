"""Every test and doctest runs without this machine's lab default model.

``CalcompModel.load("default")`` follows ``CALCOMP_MODEL`` and the user's config file
(:mod:`calcomp_caiman.model.defaults`); a lab default set on the machine must not change
what a test sees. Tests of the lab default set their own ``XDG_CONFIG_HOME``.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_lab_default(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CALCOMP_MODEL", raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg_config_home")))
        yield
