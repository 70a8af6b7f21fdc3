"""Personal data: detection on sampled string values, and the SQL that masks, hashes or
generalises a column.

Detection is deliberately conservative: a column is reported for a kind when at least
``min_share`` of its sampled non-empty values match, with checksums where the kind has one
(Luhn for payment cards, ISO 7064 mod-97 for IBANs) and :mod:`ipaddress` for IP addresses.
Name columns are found by their header (``name``, ``first_name``, ``surname`` …) together
with values that look like capitalised words.

Hashing is HMAC-SHA256 with a per-organization key, computed inside DuckDB from its
``sha256`` primitive (``H((k ⊕ opad) ‖ H((k ⊕ ipad) ‖ m))``), so equal inputs give equal
tokens within one organization (joins keep working) and different tokens across
organizations; the key never appears in results.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from typing import Literal

from aiaas.data.duck import qident

PiiKind = Literal["email", "phone", "payment_card", "iban", "ip_address", "person_name"]

_EMAIL = re.compile(r"^[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(\.[A-Za-z0-9\-]{1,63})+$")
_PHONE = re.compile(r"^\+?[\d\s().\-]{7,24}$")
_DATE_LIKE = re.compile(r"^\d{1,4}[\-./]\d{1,2}[\-./]\d{1,4}")
_CARD = re.compile(r"^\d(?:[ \-]?\d){12,18}$")
_IBAN = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9 ]{11,34}$")
_NAME_WORD = re.compile(r"^[^\W\d_][^\W\d_'.\-]*(?:[\-'][^\W\d_]+)*\.?$")
_NAME_HEADERS = re.compile(
    r"(^|_)(name|first_?name|last_?name|given_?name|family_?name|surname|full_?name|"
    r"forename|customer|person|contact|vorname|nachname|nom|prenom)($|_)",
    re.IGNORECASE,
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    s = value.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in moved))
    except ValueError:
        return False
    return number % 97 == 1


def _is_phone(v: str) -> bool:
    if not _PHONE.match(v) or _DATE_LIKE.match(v) or _is_ip(v):
        return False
    digits = re.sub(r"\D", "", v)
    if not 7 <= len(digits) <= 15:
        return False
    # plain integers and decimals are not phone numbers: require a separator or a leading +
    return v.startswith("+") or bool(re.search(r"[\s().\-]", v.strip()))


def _is_card(v: str) -> bool:
    if not _CARD.match(v):
        return False
    digits = re.sub(r"\D", "", v)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _is_ip(v: str) -> bool:
    if not (("." in v and v[0].isdigit()) or ":" in v):
        return False
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return False
    return True


def _is_name(v: str) -> bool:
    words = v.replace(",", " ").split()
    return 1 <= len(words) <= 4 and all(w[0].isupper() and _NAME_WORD.match(w) for w in words)


_CHECKS = {
    "email": lambda v: bool(_EMAIL.match(v)),
    "payment_card": _is_card,
    "iban": lambda v: bool(_IBAN.match(v.upper())) and iban_ok(v),
    "ip_address": _is_ip,
    "phone": _is_phone,
}


def detect_pii(
    column: str, values: Iterable[str | None], *, min_share: float = 0.3
) -> list[dict[str, object]]:
    """PII kinds found in a column's sampled values: ``[{"kind", "share"}]``, best first."""
    sample = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not sample:
        return []
    found: list[dict[str, object]] = []
    for kind, check in _CHECKS.items():
        hits = sum(1 for v in sample if check(v))
        share = hits / len(sample)
        if share >= min_share:
            found.append({"kind": kind, "share": round(share, 4)})
    if _NAME_HEADERS.search(column) and not found:
        share = sum(1 for v in sample if _is_name(v)) / len(sample)
        if share >= min_share:
            found.append({"kind": "person_name", "share": round(share, 4)})
    found.sort(key=lambda f: -float(str(f["share"])))
    return found


# --------------------------------------------------------------------------- transforms


def org_hash_key(master_secret: bytes, org_id: str) -> bytes:
    """The organization's PII hashing key, derived from the platform secret."""
    return hmac.new(master_secret, b"aiaas/pii-hash/v1/" + org_id.encode(), hashlib.sha256).digest()


def hmac_hex(key: bytes, value: str) -> str:
    """Reference implementation of what :func:`hash_sql` computes (used by tests)."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def _blob_literal(data: bytes) -> str:
    return "unhex('" + data.hex() + "')"


def hash_sql(column: str, key: bytes) -> str:
    """SQL for HMAC-SHA256(key, CAST(column AS VARCHAR)) as lowercase hex (NULL stays NULL)."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\x00")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    col = qident(column)
    inner = f"unhex(sha256({_blob_literal(ipad)} || encode(CAST({col} AS VARCHAR))))"
    return f"CASE WHEN {col} IS NULL THEN NULL ELSE sha256({_blob_literal(opad)} || {inner}) END"


def mask_sql(column: str, keep: int = 4, char: str = "*") -> str:
    """SQL masking all but the last ``keep`` characters (e-mails keep their domain)."""
    col = qident(column)
    v = f"CAST({col} AS VARCHAR)"
    c = char.replace("'", "''")
    return (
        f"CASE WHEN {col} IS NULL THEN NULL "
        f"WHEN regexp_matches({v}, '^[^@\\s]+@[^@\\s]+$') THEN "
        f"left({v}, 1) || repeat('{c}', greatest(length(split_part({v}, '@', 1)) - 1, 0)) "
        f"|| '@' || split_part({v}, '@', 2) "
        f"ELSE repeat('{c}', length({v}) - least({int(keep)}, length({v}) // 2)) "
        f"|| right({v}, least({int(keep)}, length({v}) // 2)) END"
    )
