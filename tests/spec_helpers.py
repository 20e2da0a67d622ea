"""Helpers of the spec tests (``tests/test_core_spec*.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from jobgrove.core.spec import KindInfo, parse_spec
from jobgrove.errors import SpecError


def rejected(spec: Any, kinds: dict[str, KindInfo], **kwargs: Any) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(spec, kinds, **kwargs)
    err = info.value
    # The message names the path first, then the problem.
    assert str(err).startswith(f"{err.path}: "), str(err)
    assert err.message and err.message in str(err)
    return err
