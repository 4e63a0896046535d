"""What runs inside the Ray cluster: the spec, the catalogs, the Serve app and its engines.

`serving.spec`, `serving.catalog`, `serving.fit` and `serving.serve_config` are
plain Python and pydantic (no ray, no torch), so the CLI validates with the
same models the server uses.
"""
