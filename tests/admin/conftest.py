import pytest

from tests.support import make_user


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """These tests make many users and never check a password: skip the slow default hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(db):
    return make_user("root", staff=True, display_name="Root")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client
