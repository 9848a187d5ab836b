"""The API service: Litestar routes that enqueue the demo's jobs; `create_app` builds it."""
