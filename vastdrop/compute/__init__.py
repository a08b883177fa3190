"""Compute adapters: `LocalCompute` (vastdrop.compute.local) and `VastCompute` (vastdrop.compute.vast),
both behind the `Compute` port in vastdrop.compute.base."""

from __future__ import annotations

from vastdrop.logs import register_secret

_SECRET_NAME_PARTS = ("SECRET", "KEY", "TOKEN", "PASSWORD", "CREDENTIAL")


def register_env_secrets(env: dict[str, str]) -> None:
    """Register every env value whose name looks secret, so `vastdrop.logs.scrub` hides it."""
    for name, value in env.items():
        if any(part in name.upper() for part in _SECRET_NAME_PARTS):
            register_secret(value)
