import pytest

from tests.support import make_user


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Tests create users all the time; production-strength hashing would dominate their run."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_ring_slots():
    """Each test starts with no ring-timer slot remembered as scheduled (calls.timers): a slot
    scheduled by an earlier test would keep this test's dial from scheduling its sweep."""
    from calls.timers import ring_slots

    ring_slots.forget()
    yield
    ring_slots.forget()


@pytest.fixture
def alice(db):
    return make_user("alice", display_name="Alice")


@pytest.fixture
def bob(db):
    return make_user("bob", display_name="Bob")


@pytest.fixture
def carol(db):
    return make_user("carol", display_name="Carol")


@pytest.fixture
def dave(db):
    return make_user("dave", display_name="Dave")
