from tests.integration.conftest import model_dir, pytest_collection_modifyitems  # noqa: F401 - re-used
