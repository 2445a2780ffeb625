"""Flags, ETCD_* variables and the config file are read as etcd reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from petcd.cli import config
from petcd.cli.config import ConfigError, FlagUsageError, load, parse_duration
from petcd.cli.flags import BY_NAME
from petcd.cli.server import help_text, options_from


def test_defaults_are_etcds() -> None:
    cfg, _, _ = load([], {})
    assert cfg.name == "default"
    assert cfg.data_dir == "default.petcd"
    assert cfg.listen_client_urls == ["http://localhost:2379"]
    assert cfg.advertise_client_urls == ["http://localhost:2379"]
    assert cfg.listen_peer_urls == ["http://localhost:2380"]
    assert cfg.initial_cluster == "default=http://localhost:2380"
    assert cfg.initial_cluster_token == "etcd-cluster"
    assert (cfg.heartbeat_ms, cfg.election_ms) == (100, 1000)
    assert cfg.max_request_bytes == 1572864
    assert cfg.max_txn_ops == 128
    assert cfg.values["snapshot-count"] == 100000
    assert cfg.values["quota-backend-bytes"] == 0  # etcd: 0 means the 2 GiB default
    assert cfg.grpc_keepalive_min_time == 5.0
    assert cfg.grpc_keepalive_interval == 7200.0


def test_go_flag_syntax() -> None:
    cfg, _, _ = load(["-name", "n1", "--max-txn-ops=7", "--pre-vote", "--enable-v2=false",
                      "--data-dir", "/tmp/x"], {})
    assert cfg.name == "n1"
    assert cfg.max_txn_ops == 7
    assert cfg.values["pre-vote"] is True
    assert cfg.values["enable-v2"] is False
    assert cfg.data_dir == "/tmp/x"


def test_data_dir_follows_name() -> None:
    cfg, _, _ = load(["--name", "infra1"], {})
    assert cfg.data_dir == "infra1.petcd"


def test_env_applies_and_flags_win() -> None:
    env = {"ETCD_NAME": "fromenv", "ETCD_MAX_TXN_OPS": "9", "ETCD_SNAPSHOT_COUNT": "5"}
    cfg, _, _ = load(["--max-txn-ops", "3"], env)
    assert cfg.name == "fromenv"
    assert cfg.max_txn_ops == 3
    assert cfg.values["snapshot-count"] == 5
    assert any("ETCD_MAX_TXN_OPS" in w and "shadowed" in w for w in cfg.warnings)


def test_unknown_env_is_only_a_warning() -> None:
    cfg, _, _ = load([], {"ETCD_NO_SUCH_THING": "1"})
    assert any("ETCD_NO_SUCH_THING" in w for w in cfg.warnings)


def test_listen_without_advertise_is_refused_like_etcd() -> None:
    with pytest.raises(ConfigError, match="--advertise-client-urls is required"):
        load(["--listen-client-urls", "http://127.0.0.1:1"], {})


def test_bad_values() -> None:
    with pytest.raises(FlagUsageError, match="flag provided but not defined: -nope"):
        load(["--nope"], {})
    with pytest.raises(FlagUsageError, match="needs an argument"):
        load(["--name"], {})
    with pytest.raises(ConfigError, match="invalid value"):
        load(["--max-txn-ops", "x"], {})
    with pytest.raises(ConfigError, match="URL scheme"):
        load(["--listen-peer-urls", "ftp://1.2.3.4:1"], {})
    with pytest.raises(ConfigError, match="expected IP in URL for binding"):
        load(["--listen-peer-urls", "http://example.com:1"], {})
    with pytest.raises(ConfigError, match="at least as 5 times"):
        load(["--heartbeat-interval", "300"], {})
    with pytest.raises(ConfigError, match="invalid value"):
        load(["--initial-cluster-state", "maybe"], {})
    with pytest.raises(ConfigError, match="is not a valid flag"):
        load(["stray"], {})


def test_ignored_legacy_flags_are_accepted() -> None:
    load(["--peer-heartbeat-interval", "5", "-v"], {})


def test_help_and_version_requests() -> None:
    assert load(["--help"], {})[1] is True
    assert load(["-version"], {})[2] is True
    text = help_text()
    for name, flag in BY_NAME.items():
        assert (f"--{name} " in text) != flag.hidden
    assert "--max-request-bytes '1572864'" in text
    assert "[not yet used]" not in text  # every flag acts, or says why it has no effect


def test_durations() -> None:
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("300ms") == pytest.approx(0.3)
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("5")


def test_config_file_replaces_flags_and_env(tmp_path: Path) -> None:
    f = tmp_path / "etcd.conf.yml"
    f.write_text(
        "name: from-file\n"
        "data-dir: /var/lib/x\n"
        "listen-client-urls: http://127.0.0.1:1234,http://127.0.0.1:1235\n"
        "advertise-client-urls: http://127.0.0.1:1234\n"
        "max-request-bytes: 1000\n"
        "grpc-keepalive-interval: 3000000000\n"  # Go durations are ns in the file
        "pre-vote: true\n"
        "log-outputs: [stderr]\n"
        "client-transport-security:\n  cert-file: /c.pem\n  client-cert-auth: true\n"
        "peer-transport-security:\n  key-file: /pk.pem\n"
        "some-unknown-key: 1\n")
    cfg, _, _ = load(["--config-file", str(f), "--name", "ignored"], {"ETCD_MAX_TXN_OPS": "1"})
    assert cfg.name == "from-file"
    assert cfg.data_dir == "/var/lib/x"
    assert cfg.listen_client_urls == ["http://127.0.0.1:1234", "http://127.0.0.1:1235"]
    assert cfg.max_request_bytes == 1000
    assert cfg.max_txn_ops == 128
    assert cfg.grpc_keepalive_interval == 3.0
    assert cfg.values["pre-vote"] is True
    assert cfg.log_outputs == ["stderr"]
    assert cfg.values["cert-file"] == "/c.pem"
    assert cfg.values["client-cert-auth"] is True
    assert cfg.values["peer-key-file"] == "/pk.pem"
    # ETCD_CONFIG_FILE works too
    cfg2, _, _ = load([], {"ETCD_CONFIG_FILE": str(f)})
    assert cfg2.name == "from-file"


def test_options_carry_the_cluster() -> None:
    cfg, _, _ = load(["--name", "a", "--initial-cluster",
                      "a=http://127.0.0.1:7001,b=http://127.0.0.1:7002",
                      "--initial-advertise-peer-urls", "http://127.0.0.1:7001"], {})
    opts = options_from(cfg)
    assert opts.initial_cluster == {"a": ("http://127.0.0.1:7001",),
                                    "b": ("http://127.0.0.1:7002",)}
    assert config.parse_url("http://10.0.0.1:2380").port == 2380


def test_tls_flags_reach_the_options() -> None:
    url = "https://127.0.0.1:1"
    cfg, _, _ = load(["--listen-client-urls", url, "--advertise-client-urls", url,
                      "--cert-file", "/c.pem", "--key-file", "/k.pem",
                      "--client-cert-auth", "--cipher-suites",
                      "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256",
                      "--peer-cert-allowed-cn", "peer"],
                     {"ETCD_CLIENT_CRL_FILE": "/crl.pem", "ETCD_TLS_MAX_VERSION": "TLS1.2",
                      "ETCD_PEER_AUTO_TLS": "true"})
    opts = options_from(cfg)
    assert (opts.cert_file, opts.key_file, opts.client_cert_auth) == ("/c.pem", "/k.pem", True)
    assert opts.cipher_suites == ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                  "TLS_AES_128_GCM_SHA256")
    assert (opts.client_crl_file, opts.tls_max_version) == ("/crl.pem", "TLS1.2")
    assert (opts.peer_cert_allowed_cn, opts.peer_auto_tls) == ("peer", True)
    assert "not yet used" not in "".join(
        line for line in help_text().splitlines()
        if any(w in line for w in ("cert", "key-file", "tls", "cipher", "crl", "ca-file")))


def test_tls_config_file_keys(tmp_path: Path) -> None:
    f = tmp_path / "etcd.conf.yml"
    f.write_text("client-transport-security:\n  client-cert-file: /cc.pem\n  auto-tls: true\n"
                 "  allowed-hostname: a.example\n"
                 "peer-transport-security:\n  client-cert-file: /pcc.pem\n"
                 "  allowed-cn: m1\n  crl-file: /p.crl\n  auto-tls: true\n"
                 "cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
                 "tls-min-version: TLS1.2\n")
    cfg, _, _ = load(["--config-file", str(f)], {})
    v = cfg.values
    assert (v["client-cert-file"], v["auto-tls"]) == ("/cc.pem", True)
    assert v["client-cert-allowed-hostname"] == "a.example"
    assert (v["peer-client-cert-file"], v["peer-cert-allowed-cn"]) == ("/pcc.pem", "m1")
    assert (v["peer-crl-file"], v["peer-auto-tls"]) == ("/p.crl", True)
    assert v["cipher-suites"] == ["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]


@pytest.mark.parametrize(("args", "message"), [
    (["--cipher-suites", "TLS_FOO"], 'unexpected TLS cipher suite "TLS_FOO"'),
    (["--tls-min-version", "TLS1.1"],
     r'unexpected TLS version "TLS1.1" \(must be one of: TLS1.2, TLS1.3\)'),
    (["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
     r"min version \(TLS1.3\) is greater than max version \(TLS1.2\)"),
    (["--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_AES_128_GCM_SHA256"],
     "cipher suites cannot be configured when only TLS1.3 or greater is supported"),
])
def test_bad_tls_settings_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(args, {})


def test_grpcio_server_refuses_tls_urls() -> None:
    url = "https://127.0.0.1:1"
    cfg, _, _ = load(["--listen-client-urls", url, "--advertise-client-urls", url,
                      "--experimental-grpc-server", "grpcio"], {})
    with pytest.raises(ConfigError, match="grpcio cannot serve https/unixs client URLs"):
        options_from(cfg)


def test_backend_batching_flags() -> None:
    # etcd: 0 means its defaults (100ms, 10000 operations)
    opts = options_from(load([], {})[0])
    assert (opts.backend_batch_interval_ms, opts.backend_batch_limit) == (100, 10000)
    opts = options_from(load(["--backend-batch-interval", "250ms",
                              "--backend-batch-limit", "7"], {})[0])
    assert (opts.backend_batch_interval_ms, opts.backend_batch_limit) == (250, 7)
    assert "[not yet used]" not in help_text().split("--backend-batch-interval")[1][:200]


def test_enable_v2_from_flag_env_and_file(tmp_path: Path) -> None:
    """--enable-v2 (etcd 3.4's default: false), ETCD_ENABLE_V2, config key enable-v2."""
    assert options_from(load([], {})[0]).enable_v2 is False
    assert options_from(load(["--enable-v2"], {})[0]).enable_v2 is True
    assert options_from(load([], {"ETCD_ENABLE_V2": "true"})[0]).enable_v2 is True
    f = tmp_path / "etcd.conf.yml"
    f.write_text("enable-v2: true\n")
    assert options_from(load(["--config-file", str(f)], {})[0]).enable_v2 is True
