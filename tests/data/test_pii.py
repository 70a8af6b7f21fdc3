"""PII detectors and the per-organization HMAC key."""

from __future__ import annotations

import pytest

from aiaas.data.pii import detect_pii, hmac_hex, iban_ok, luhn_ok, org_hash_key


def kinds(column, values):
    return [f["kind"] for f in detect_pii(column, values)]


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("contact", ["ann@example.com", "bob.smith+x@mail.co.uk", "x"], ["email"]),
        ("tel", ["+1 415 555 2671", "(030) 1234567", "+44 20 7946 0958"], ["phone"]),
        ("cc", ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"], ["payment_card"]),
        ("acct", ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"], ["iban"]),
        ("ip", ["10.0.0.1", "2001:db8::1", "192.168.1.20"], ["ip_address"]),
        ("first_name", ["Alice", "Bob", "Zoë", "Jean-Luc"], ["person_name"]),
        ("comment", ["great product", "late again", "ok"], []),
        ("amount", ["1.50", "12345678", "2024-01-01", "2024-02-03"], []),
        ("cc", ["4111 1111 1111 1112", "1234 5678 9012 3456"], []),  # Luhn fails
        ("acct", ["DE00 3704 0044 0532 0130 00"], []),  # mod-97 fails
    ],
)
def test_detectors(column, values, expected):
    assert kinds(column, values) == expected


def test_checksums():
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB83 WEST 1234 5698 7654 32")


def test_org_keys_differ_and_are_stable():
    a = org_hash_key(b"master", "org_a")
    assert a == org_hash_key(b"master", "org_a")
    assert a != org_hash_key(b"master", "org_b")
    assert hmac_hex(a, "x") != hmac_hex(org_hash_key(b"master", "org_b"), "x")
