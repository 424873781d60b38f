"""`churnops serve --dataset path/to/contract.yaml`: the API serves the dataset the contract file describes."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from churnops.config import BUILTIN_DATASETS_DIR
from tests.serving.conftest import start_server


@pytest.mark.slow
def test_serve_takes_a_contract_path_not_only_a_builtin_name(trained_platform, tmp_path: Path) -> None:
    # A user's file named after nothing built in: passing its stem as a dataset name would fail at start-up
    # ("no dataset named 'mine'"); passing the path loads the contract and serves its champion.
    contract_path = tmp_path / "contracts" / "mine.yaml"
    contract_path.parent.mkdir()
    shutil.copy(BUILTIN_DATASETS_DIR / "synthetic.yaml", contract_path)

    server = start_server(trained_platform.settings, tmp_path, dataset=str(contract_path))
    try:
        ready = httpx.get(f"{server.base_url}/ready", timeout=10).json()
    finally:
        server.stop()
    assert ready["model_name"] == trained_platform.contract.model_name
    assert ready["model_version"] == trained_platform.model_version
