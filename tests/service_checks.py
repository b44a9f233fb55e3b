"""A check the service tests share: a call the server must refuse, with its status and words."""

from __future__ import annotations

import pytest

from mespot.service.client import ServiceError


def refused(call, status: int, words: str) -> str:
    """Run `call()`; it must raise ServiceError with `status` and `words` in its message."""
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.status == status, str(caught.value)
    assert words in str(caught.value), str(caught.value)
    return str(caught.value)
