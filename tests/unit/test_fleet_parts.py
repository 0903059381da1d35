"""Pieces of a fleet that are pure text: PostgreSQL's client rules, HAProxy's configuration."""

from operations.database import HBA_BEGIN, HBA_END, hba_text, remote_url
from operations.settings import validate

DEBIAN_HBA = """local   all             postgres                                peer
local   all             all                                     peer
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
"""


def test_pg_hba_lets_in_the_app_servers_over_tls_only():
    text = hba_text(DEBIAN_HBA, "shop", "shop", ["10.0.0.11", "10.0.0.12"])
    assert text.startswith(DEBIAN_HBA)
    block = text[text.index(HBA_BEGIN):]
    assert "hostssl shop shop 10.0.0.11/32 scram-sha-256" in block
    assert "hostssl shop shop 10.0.0.12/32 scram-sha-256" in block
    assert "\nhost " not in block  # never a plain-text line for a remote address
    # Run again with other servers: the block is replaced, the rest kept as it was.
    again = hba_text(text, "shop", "shop", ["10.0.0.13"])
    assert again.count(HBA_BEGIN) == 1 and again.count(HBA_END) == 1
    assert "10.0.0.11" not in again and "10.0.0.13/32" in again
    assert again.startswith(DEBIAN_HBA)
    assert hba_text(again, "shop", "shop", ["10.0.0.13"]) == again


def test_database_url_requires_tls_and_quotes_the_password():
    s = validate({"repo_url": "x", "app_name": "shop"})
    url = remote_url(s, "10.0.0.5", "p/w+x")
    assert url == "postgres://shop:p%2Fw%2Bx@10.0.0.5:5432/shop?sslmode=require"
