"""A relative data dir (or the default) is made absolute once, where the settings are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.settings import load_settings


def test_relative_data_dir_is_taken_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"STREAMAPP_DATA_DIR": "data/w1"})
    assert settings.data_dir == tmp_path / "data" / "w1"


def test_default_data_dir_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_settings({}).data_dir == tmp_path / "data"


def test_home_in_data_dir_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings({"STREAMAPP_DATA_DIR": "~/state"}).data_dir == tmp_path / "state"


@pytest.mark.parametrize("raw", ["data/w1", "./w2", "../elsewhere"])
def test_faust_table_dir_is_inside_the_data_dir(raw, tmp_path, monkeypatch):
    """faust joins a relative tabledir onto datadir/v1: the app must hand it absolute paths."""
    monkeypatch.chdir(tmp_path)
    from streamapp.app import create_app

    settings = load_settings({"STREAMAPP_DATA_DIR": raw, "STREAMAPP_APP_ID": "dd-test"})
    app = create_app(settings)
    assert Path(app.conf.tabledir) == (tmp_path / raw).absolute() / "tables"
