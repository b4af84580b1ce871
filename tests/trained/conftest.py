"""The fixture of the trained-model tier: :class:`trained.tier.Tier`, one per session."""

import pytest

from trained.tier import Tier, cache_folder


@pytest.fixture(scope="session")
def tier(tmp_path_factory) -> Tier:
    """The tier's networks (trained once, cached between sessions) and this session's runs."""
    return Tier(cache_folder(), tmp_path_factory.mktemp("trained"))
