"""The agent and supervisor console and REST API (Flask), reading and writing through the store and ACD."""

from __future__ import annotations

from ivr.web.app import WebConfig, create_app
from ivr.web.auth import ROLES, AuthError, add_user, new_token

__all__ = ["ROLES", "AuthError", "WebConfig", "add_user", "create_app", "new_token"]
