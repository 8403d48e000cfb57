from pathlib import Path

import pytest

from orchestrator.config import load_settings
from orchestrator.errors import ConfigError


def test_defaults_then_file_then_env(tmp_path: Path) -> None:
    cfg = tmp_path / "tutti.toml"
    cfg.write_text('[topics]\nprefix = "shop."\npartitions = 6\n[worker]\nweb_port = 7000\n')
    s = load_settings(cfg, env={"TUTTI_TOPICS_PARTITIONS": "24"})
    assert s.topics.prefix == "shop."
    assert s.topics.partitions == 24  # env wins over the file
    assert s.worker.web_port == 7000
    assert s.kafka.framing == "confluent"  # default


def test_standard_kafka_env_names_are_honoured() -> None:
    s = load_settings(env={"KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092"})
    assert s.kafka.bootstrap_servers == "b1:9092,b2:9092"
    s = load_settings(
        env={"KAFKA_BOOTSTRAP_SERVERS": "x:1", "TUTTI_KAFKA_BOOTSTRAP_SERVERS": "y:2"}
    )
    assert s.kafka.bootstrap_servers == "y:2"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TUTTI_TOPICS_PARTITIONS": "twelve"}, "topics.partitions"),
        ({"TUTTI_TOPICS_PARTITIONS": "0"}, "topics.partitions"),
        ({"TUTTI_KAFKA_FRAMING": "xml"}, "kafka.framing"),
        ({"TUTTI_SENDER_SMTP_STARTTLS": "maybe"}, "sender.smtp_starttls"),
        ({"TUTTI_KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "kafka.bootstrap_servers"),
        ({"TUTTI_TOPICS_PREFIX": "bad prefix"}, "topics.prefix"),
        ({"TUTTI_WORKER_INDEX_WRITE_EVERY_MS": "-1"}, "worker.index_write_every_ms"),
        ({"TUTTI_WORKER_FETCH_SESSIONS": "sometimes"}, "worker.fetch_sessions"),
    ],
)
def test_bad_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_settings(env=env)


def test_unknown_setting_in_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "tutti.toml"
    cfg.write_text("[kafka]\nbootstrap = 'x:1'\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings(cfg, env={})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_secrets_are_masked_in_describe() -> None:
    s = load_settings(env={"TUTTI_SENDER_SMTP_PASSWORD": "hunter2", "TUTTI_WORKER_API_TOKEN": "t"})
    shown = s.describe()
    assert shown["sender.smtp_password"] == "***"
    assert shown["worker.api_token"] == "***"
    assert "hunter2" not in repr(shown)
