"""Login throttling slows attackers down without locking their victims out.

Failures count per client address and per (account, address) — never per account alone —
with exponential backoff; an attempt is reserved before its password is checked.
"""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from aiaas.auth.cache import LoginThrottle
from aiaas.auth.models import User
from aiaas.auth.passwords import Passwords
from aiaas.db import get_session_factory
from tests.auth.concurrency import run_concurrently
from tests.conftest import PASSWORD
from tests.helpers import assert_problem

WRONG = "wrong password 1234"


def login(client, email, password=PASSWORD):
    return client.post("/api/v1/auth/token", data={"username": email, "password": password})


@pytest.fixture
def attacker(app):
    with TestClient(app, client=("203.0.113.7", 40000)) as test_client:
        yield test_client


@pytest.fixture
def elsewhere(app):
    with TestClient(app, client=("198.51.100.2", 50000)) as test_client:
        yield test_client


def test_failures_from_one_address_never_lock_the_owner_out(attacker, elsewhere, tenants, settings):
    email = tenants.a.emails["owner"]
    for _ in range(settings.auth.login_max_failures):
        assert_problem(login(attacker, email, WRONG), 401)
    blocked = login(attacker, email)  # the right password, from the attacker's address
    assert_problem(blocked, 429, "too_many_requests")
    assert int(blocked.headers["retry-after"]) > 0
    owner = login(elsewhere, email)  # the owner, from their own address: in at once
    assert owner.status_code == 200, owner.text
    assert owner.json()["organization"] == tenants.a.slug


def test_a_blocked_address_waits_longer_each_time(attacker, elsewhere, tenants, settings):
    email = tenants.a.emails["owner"]
    for _ in range(settings.auth.login_max_failures):
        login(attacker, email, WRONG)
    waits = []
    for _ in range(6):
        response = login(attacker, email)
        assert_problem(response, 429, "too_many_requests")
        waits.append(int(response.headers["retry-after"]))
    # First block 60 s (window/15), doubled by every further try, capped at 4 windows.
    assert waits == [120, 240, 480, 960, 1920, 3600]
    # The block is on (account, address): another account from that address still logs in,
    # and the owner from elsewhere too.
    assert login(attacker, tenants.a.emails["viewer"]).status_code == 200
    assert login(elsewhere, email).status_code == 200


def test_one_address_guessing_many_accounts_is_blocked(attacker, elsewhere, tenants, settings):
    limit = settings.auth.login_max_failures
    for i in range(limit * 5):  # the per-address budget: five accounts' worth
        assert_problem(login(attacker, f"guess-{i % 7}@org-a.example", WRONG), 401)
    blocked = login(attacker, tenants.a.emails["viewer"])
    assert_problem(blocked, 429, "too_many_requests")
    assert blocked.headers["retry-after"] == "120"  # the 60 s block, doubled by this try
    assert login(elsewhere, tenants.a.emails["viewer"]).status_code == 200


def test_a_success_clears_the_account_count_from_that_address_only(attacker, tenants, settings):
    limit = settings.auth.login_max_failures
    email = tenants.a.emails["viewer"]
    for _ in range(limit - 1):
        assert_problem(login(attacker, email, WRONG), 401)
    assert login(attacker, email).status_code == 200
    for _ in range(limit):
        assert_problem(login(attacker, email, WRONG), 401)  # counting again from zero
    assert_problem(login(attacker, email), 429)


def test_concurrent_wrong_passwords_are_checked_at_most_limit_times(
    attacker, elsewhere, tenants, settings
):
    limit = settings.auth.login_max_failures
    email = tenants.a.emails["viewer"]
    # A costlier hash (as in production) keeps every guess in flight for a while.
    slow = Passwords(time_cost=2, memory_kib=16384).hash(PASSWORD)
    with get_session_factory(settings.resolved_database_url)() as session, session.begin():
        session.execute(
            update(User).where(User.id == tenants.a.users["viewer"]).values(password_hash=slow)
        )
    statuses = run_concurrently(2 * limit, lambda _: login(attacker, email, WRONG).status_code)
    assert Counter(statuses) == {401: limit, 429: limit}
    assert login(elsewhere, email).status_code == 200


def test_throttle_backoff_window_and_reservations_with_a_fake_clock():
    now = [1000.0]
    throttle = LoginThrottle(3, 60, clock=lambda: now[0])
    account, address = "org-a/ann@example.com", "10.0.0.1"
    for _ in range(3):
        assert throttle.reserve(account, address) is None
        throttle.release(account, address, success=False)
    # Blocked for 4 s (60/15); every refused try doubles the wait.
    assert throttle.reserve(account, address) == 8
    assert throttle.reserve(account, address) == 16
    # Only this (account, address) pair is blocked.
    assert throttle.reserve("org-a/bob@example.com", address) is None
    throttle.release("org-a/bob@example.com", address, success=True)
    assert throttle.reserve(account, "10.0.0.2") is None
    throttle.release(account, "10.0.0.2", success=True)
    # After the block one probe is let through; its failure doubles the block again.
    now[0] += 16
    assert throttle.reserve(account, address) is None
    throttle.release(account, address, success=False)
    assert throttle.reserve(account, address) == 64
    assert throttle.reserve(account, address) == 128
    assert throttle.reserve(account, address) == 240  # capped at four windows
    # Quiet for the block plus a window: forgotten.
    now[0] += 240 + 60
    assert throttle.reserve(account, address) is None
    throttle.release(account, address, success=True)

    # In-flight attempts count: the third concurrent try is refused before any is checked.
    inflight = LoginThrottle(2, 60, clock=lambda: now[0])
    assert inflight.reserve(account, address) is None
    assert inflight.reserve(account, address) is None
    assert inflight.reserve(account, address) == 4
    inflight.release(account, address, success=False)
    inflight.release(account, address, success=False)
    assert inflight.reserve(account, address) == 16  # strikes: refused try, then the limit


def test_ipv6_clients_are_counted_by_their_64_prefix():
    throttle = LoginThrottle(1, 60, clock=lambda: 0.0)
    assert throttle.reserve("a", "2001:db8:1:2::1") is None
    throttle.release("a", "2001:db8:1:2::1", success=False)
    assert throttle.reserve("a", "2001:db8:1:2:ffff::9") is not None
    assert throttle.reserve("a", "2001:db8:1:3::1") is None
