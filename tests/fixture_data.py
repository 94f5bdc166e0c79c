"""Where the repository's real-world test data lives: copies of what arrived in the project's
shared fixture folder, with their sources in each folder's README/INDEX, so that a plain
clone runs every test."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
POD_FIXTURES = FIXTURES / "pods"
CGROUP_CORPUS = FIXTURES / "cgroup"


def pod_fixture(name: str) -> Path:
    path = POD_FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(f"pod fixture {path} is missing from the repository")
    return path
