"""keepmail.web: the admin console, user self-service, well-known endpoints and metrics.

Starlette + Jinja2 served over HTTPS by uvicorn inside keepmail's event loop
(service.py); `wiring.build_web(app)` is what App.build calls.
"""
