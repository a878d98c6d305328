"""Test and demo helpers (never used by production code paths)."""
