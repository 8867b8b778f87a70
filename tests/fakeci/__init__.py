"""Fake BK-CI server and worker stand-in used by the integration tests."""
