import pytest


@pytest.fixture(scope="session")
def tiny_pipe():
    from core import load_pipeline

    return load_pipeline("tiny", device="cpu")
