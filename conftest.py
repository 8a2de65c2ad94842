"""Every test and doctest runs without this machine's lab default model.

``CalcompModel.load("default")`` follows ``CALCOMP_MODEL`` and the user's config file
(:mod:`calcomp_caiman.model.defaults`); a lab default set on the machine must not change
what a test sees, and one a test sets (``calcomp lab set``, ``set_default_model``) must not
outlive it: each test gets an empty ``XDG_CONFIG_HOME`` of its own (and fixtures shared by
several tests one for the session).
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_lab_default_in_shared_fixtures(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CALCOMP_MODEL", raising=False)
        patch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg_config_home")))
        yield


@pytest.fixture(autouse=True)
def _no_lab_default(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("CALCOMP_MODEL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
