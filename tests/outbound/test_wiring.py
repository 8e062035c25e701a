"""build_outbound() against the real App: listeners on the configured ports, the
queue runner, and the forwarder handed to the MX."""

from __future__ import annotations

import smtplib
from pathlib import Path

from keepmail import config as configmod
from keepmail.app import App
from keepmail.outbound.wiring import build_outbound

from .conftest import client_context, run


def test_build_outbound_with_app(tmp_path: Path) -> None:
    path = tmp_path / "keepmail.toml"
    path.write_text(configmod.render_default_config({"server": {
        "hostname": "mail.a.test", "data_dir": "data", "listen": ["127.0.0.111"],
        "domains": ["a.test"]}}))
    cfg = configmod.load(path)

    async def go() -> None:
        app = App(cfg, port_offset=23000 + (hash(str(tmp_path)) % 2000))
        services = build_outbound(app)
        names = [name for name, _port, _service in services]
        assert names == ["submission", "submissions", "outbound-queue"]
        assert callable(app.forwarder)  # type: ignore[attr-defined]
        for name, port, service in services:
            app.add(name, port, service)
        await app.start()
        try:
            port = cfg.port("submission", app.port_offset)

            def probe() -> bool:
                with smtplib.SMTP("127.0.0.111", port) as s:
                    s.starttls(context=client_context())
                    s.ehlo()
                    return s.has_extn("auth")

            import asyncio
            assert await asyncio.to_thread(probe)
            # DKIM keys were made for the configured domain.
            from keepmail.outbound.dkimkeys import dns_records
            assert len(dns_records(app.store, "a.test")) == 2
        finally:
            await app.stop()

    run(go())
