"""Settings load once from CRM_ESP_SYNC_* and a TOML file; bad values fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import Secret, load_settings
from sync.errors import ConfigurationError


def test_defaults_use_sqlite_in_the_working_directory() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///crm-esp-sync.db"
    assert settings.crm_url == settings.database_url
    assert settings.master_keys == ()


def test_environment_wins_over_the_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "sync.toml"
    path.write_text('database_url = "sqlite:///from-file.db"\nlog_level = "debug"\n'
                    '[crm]\nmembers = "crm.v_members"\n', encoding="utf-8")
    settings = load_settings({"CRM_ESP_SYNC_DATABASE_URL": "sqlite:///from-env.db"}, path)
    assert settings.database_url == "sqlite:///from-env.db"
    assert settings.log_level == "debug"
    assert settings.crm.members == "crm.v_members"


def test_master_key_file_holds_newest_first(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("new-key\nold-key\n", encoding="utf-8")
    settings = load_settings({"CRM_ESP_SYNC_MASTER_KEY_FILE": str(tmp_path / "key")})
    assert [k.reveal() for k in settings.master_keys] == ["new-key", "old-key"]


@pytest.mark.parametrize(("env", "says"), [
    ({"CRM_ESP_SYNC_LOG_FORMAT": "xml"}, "log_format"),
    ({"CRM_ESP_SYNC_LEASE_SECONDS": "3"}, "lease_seconds"),
    ({"CRM_ESP_SYNC_LOOKBACK_SECONDS": "an hour"}, "lookback_seconds"),
    ({"CRM_ESP_SYNC_DATABASE_URL": "just-a-file.db"}, "database_url"),
    ({"CRM_ESP_SYNC_CRM_MEMBERS": "members; drop table x"}, "identifier"),
    ({"CRM_ESP_SYNC_MASTER_KEY_FILE": "/nonexistent/key"}, "master key file"),
    ({"CRM_ESP_SYNC_DATABSE_URL": "sqlite://"}, "unknown setting: databse_url"),
])
def test_bad_setting_fails_at_start_naming_it(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        load_settings(env)
    assert "\n" not in str(caught.value)


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter22")
    assert "hunter22" not in repr(secret) + str(secret) + f"{secret}"
    assert secret.reveal() == "hunter22"


def test_test_suite_variables_are_not_settings() -> None:
    """A developer with the test database URLs exported can still use the CLI."""
    settings = load_settings({"CRM_ESP_SYNC_TEST_POSTGRES_URL": "postgresql://x", "CRM_ESP_SYNC_WORKERS": "2"})
    assert settings.workers == 2


def test_bad_timezone_and_schedule_fail_at_start() -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        load_settings({"CRM_ESP_SYNC_TIMEZONE": "Europe/Ankara"})
    with pytest.raises(ConfigurationError, match="default_schedule"):
        load_settings({"CRM_ESP_SYNC_DEFAULT_SCHEDULE": "every night"})


def test_the_commit_ordered_change_column_is_a_setting_and_must_be_a_column_name(tmp_path: Path) -> None:
    path = tmp_path / "sync.toml"
    path.write_text('[crm]\nchange_xid = "change_xid"\n', encoding="utf-8")
    assert load_settings({}, path).crm.change_xid == "change_xid"
    assert load_settings({"CRM_ESP_SYNC_CRM_CHANGE_XID": "xid_col"}).crm.change_xid == "xid_col"
    assert load_settings({}).crm.change_xid == ""
    with pytest.raises(ConfigurationError, match="crm_change_xid must be a column name"):
        load_settings({"CRM_ESP_SYNC_CRM_CHANGE_XID": "x; DROP TABLE y"})
