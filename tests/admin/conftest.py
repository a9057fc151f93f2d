import pytest

from tests.support import make_user


@pytest.fixture
def staff(db):
    return make_user("root", staff=True, display_name="Root")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client
