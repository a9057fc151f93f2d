import pytest

from tests.support import Device


@pytest.fixture
async def opened():
    """Open devices (sockets) for users; every one opened is closed after the test."""
    opened_devices = []

    async def open_device(user, **options):
        device = await Device.open(user, **options)
        opened_devices.append(device)
        return device

    yield open_device
    for device in opened_devices:
        await device.close()
