"""Shared fixtures: a private DIFFCLI_HOME per test session and small indexes built once."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def diffcli_home(tmp_path_factory):
    """Never touch the user's cache: every index the tests build goes to a temporary home."""
    home = tmp_path_factory.mktemp("diffcli-home")
    old = os.environ.get("DIFFCLI_HOME")
    os.environ["DIFFCLI_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("DIFFCLI_HOME", None)
    else:
        os.environ["DIFFCLI_HOME"] = old


@pytest.fixture(scope="session")
def digits_index_path(tmp_path_factory):
    from diffcli.data import load_dataset
    from diffcli.index.build import build_index

    path = tmp_path_factory.mktemp("idx") / "digits.h5"
    return build_index(load_dataset("digits"), path)


@pytest.fixture(scope="session")
def digits_index(digits_index_path):
    from diffcli.index import open_index

    return open_index(digits_index_path)


@pytest.fixture(scope="session")
def shapes_index_path(tmp_path_factory):
    from diffcli.data import load_dataset
    from diffcli.index.build import build_index

    path = tmp_path_factory.mktemp("idx") / "shapes16.h5"
    return build_index(load_dataset("shapes:res=16,n=600"), path)
