"""The import path gale's Serve configs name (`serving.app:build_app`), kept stable.

Live clusters' configs store this path and `serve_config.is_gale_application`
recognises gale's applications by it, so it stays while the deployment itself
lives in `serving.deployment`.
"""

from serving.deployment import build_app

__all__ = ["build_app"]
