from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, ensure_embedded_secret, load_settings

SECRET = "s" * 40


class TestLoadSettings:
    def test_defaults_are_embedded_friendly(self) -> None:
        settings = load_settings(environ={}, embedded=True)
        assert settings.broker_url == "memory://"
        assert settings.bus_prefix == "partsflow"
        assert settings.db_url("inventory").startswith("sqlite:///")
        assert settings.db_url("inventory").endswith("var/inventory.db")

    def test_environment_is_read(self) -> None:
        settings = load_settings(
            environ={
                "PARTSFLOW_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
                "PARTSFLOW_INVENTORY_DB_URL": "postgresql://u@h/inv",
                "PARTSFLOW_SECRET_KEY": SECRET,
                "PARTSFLOW_TRACKING_SCAN_SECONDS": "5",
            }
        )
        assert settings.broker_url.startswith("amqp://")
        assert settings.db_url("inventory") == "postgresql://u@h/inv"
        assert settings.tracking_scan_seconds == 5.0

    def test_overrides_win(self) -> None:
        settings = load_settings(
            {"bus_prefix": "t1"}, environ={"PARTSFLOW_BUS_PREFIX": "env"}, embedded=True
        )
        assert settings.bus_prefix == "t1"

    @pytest.mark.parametrize(
        ("environ", "message"),
        [
            ({"PARTSFLOW_BROKER_URL": "http://x"}, "PARTSFLOW_BROKER_URL"),
            ({"PARTSFLOW_INVENTORY_DB_URL": "mysql://x/y"}, "PARTSFLOW_INVENTORY_DB_URL"),
            ({"PARTSFLOW_INVENTORY_DB_URL": "::::"}, "PARTSFLOW_INVENTORY_DB_URL"),
            ({"PARTSFLOW_INVENTORY_DB_URL": "postgresql://h:port/x"}, "PARTSFLOW_INVENTORY_DB_URL"),
            ({"PARTSFLOW_INVENTORY_DB_URL": "sqlite+nosuch:///x"}, "PARTSFLOW_INVENTORY_DB_URL"),
            ({"PARTSFLOW_TRACKING_SCAN_SECONDS": "soon"}, "PARTSFLOW_TRACKING_SCAN_SECONDS"),
            ({"PARTSFLOW_QUEUE_TYPE": "stream"}, "PARTSFLOW_QUEUE_TYPE"),
            ({"PARTSFLOW_LOG_LEVEL": "LOUD"}, "PARTSFLOW_LOG_LEVEL"),
            ({"PARTSFLOW_LOG_FORMAT": "xml"}, "PARTSFLOW_LOG_FORMAT"),
            ({"PARTSFLOW_WORKER_PORT": "-5"}, "PARTSFLOW_WORKER_PORT"),
            ({"PARTSFLOW_WORKER_PORT": "70000"}, "PARTSFLOW_WORKER_PORT"),
            ({"PARTSFLOW_CONSUMER_PREFETCH": "0"}, "PARTSFLOW_CONSUMER_PREFETCH"),
            ({"PARTSFLOW_CONFIRM_TIMEOUT": "0"}, "PARTSFLOW_CONFIRM_TIMEOUT"),
            ({"PARTSFLOW_RELAY_IDLE_SECONDS": "nan"}, "PARTSFLOW_RELAY_IDLE_SECONDS"),
            ({"PARTSFLOW_TRACKING_SCAN_SECONDS": "inf"}, "PARTSFLOW_TRACKING_SCAN_SECONDS"),
            ({"PARTSFLOW_SECURE_COOKIES": "maybe"}, "PARTSFLOW_SECURE_COOKIES"),
        ],
    )
    def test_bad_values_stop_start_up_with_one_line(self, environ, message) -> None:
        with pytest.raises(ConfigError) as error:
            load_settings(environ={**environ, "PARTSFLOW_SECRET_KEY": SECRET})
        assert message in str(error.value)
        assert "\n" not in str(error.value)

    def test_production_needs_a_long_secret(self) -> None:
        with pytest.raises(ConfigError, match="PARTSFLOW_SECRET_KEY is required"):
            load_settings(environ={})
        with pytest.raises(ConfigError, match="at least"):
            load_settings(environ={"PARTSFLOW_SECRET_KEY": "short"})

    def test_the_embedded_mode_takes_the_secret_it_is_given(self) -> None:
        settings = load_settings(environ={"PARTSFLOW_SECRET_KEY": "dev"}, embedded=True)
        assert settings.secret_key == "dev"

    @pytest.mark.parametrize("data_dir", ["a-file", "a-file/var"])
    def test_a_data_dir_that_cannot_be_used_is_named(self, tmp_path: Path, data_dir) -> None:
        (tmp_path / "a-file").write_text("")
        settings = load_settings({"data_dir": str(tmp_path / data_dir)}, environ={}, embedded=True)
        with pytest.raises(ConfigError) as error:
            ensure_embedded_secret(settings)
        assert str(error.value).startswith("PARTSFLOW_DATA_DIR ")
        assert "\n" not in str(error.value)

    def test_embedded_secret_is_generated_once_and_kept(self, tmp_path: Path) -> None:
        settings = load_settings({"data_dir": str(tmp_path)}, environ={}, embedded=True)
        first = ensure_embedded_secret(settings).secret_key
        second = ensure_embedded_secret(settings).secret_key
        assert first == second
        assert len(first) >= 32
        assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
