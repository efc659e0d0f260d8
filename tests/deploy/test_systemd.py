"""deploy/mailwarden.service: the file system stays read-only (ProtectSystem=strict) except where mailwarden writes,
and that includes where automated rotation writes an app's new secret (monitor.autorotate.write_secret_file: a
temporary file beside the app's `secret: file:PATH`, then a rename, so PATH's directory must be writable)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from mailwarden.monitor import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "mailwarden.service"
DOCUMENTED = PurePosixPath("/etc/mailwarden/secrets")  # the unit's comment: where automated rotation's files go


def service_settings() -> dict[str, list[str]]:
    """[Service] key -> every value given (systemd allows a key many times; an empty value resets the list)."""
    section, out = None, {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            values = out.setdefault(key.strip(), [])
            if value.strip():
                values.append(value.strip())
            else:
                values.clear()
    return out


def writable() -> list[PurePosixPath]:
    s = service_settings()
    paths = [PurePosixPath(p.lstrip("-+")) for v in s.get("ReadWritePaths", []) for p in v.split()]
    return paths + [PurePosixPath("/var/lib", d) for v in s.get("StateDirectory", []) for d in v.split()]


def covered(path: PurePosixPath) -> bool:
    return any(path == w or w in path.parents for w in writable())


def rotation_writes(cfg: config_mod.Config) -> list[PurePosixPath]:
    """The directories automated rotation writes in for this config (as monitor.autorotate resolves the reference)."""
    out = []
    for app in cfg.apps.values():
        if app.rotation.automated:
            p = Path(str(app.secret).removeprefix("file:")).expanduser()
            out.append(PurePosixPath(p if p.is_absolute() else cfg.base_dir / p).parent)
    return out


def test_the_documented_rotation_directory_is_writable_and_the_rest_read_only():
    s = service_settings()
    assert s["ProtectSystem"] == ["strict"] and s["ProtectHome"] == ["true"] and s["NoNewPrivileges"] == ["true"]
    assert covered(DOCUMENTED / "agiloft")
    assert not covered(PurePosixPath("/etc/mailwarden/mailwarden.yaml"))  # the config itself stays read-only
    assert covered(PurePosixPath("/var/lib/mailwarden/mailwarden.db"))  # the SQLite database and its key file
    text = UNIT.read_text()
    assert str(DOCUMENTED) in text and "rotation.automated" in text and "systemctl edit mailwarden" in text
    # a missing directory must not stop the unit from starting ("-": ignored while it does not exist)
    assert any(p == f"-{DOCUMENTED}" for v in s["ReadWritePaths"] for p in v.split())


def _configs() -> list[tuple[str, config_mod.Config]]:
    """The example configs, loaded as the unit's `mailwarden` would (from /etc/mailwarden), and one per app kind of
    reference automated rotation takes: absolute in the documented directory, relative to the config's directory."""
    out = []
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        cfg = config_mod.load(example)
        cfg.base_dir = Path("/etc/mailwarden")
        out.append((example.name, cfg))
    for name, ref in (("absolute", f"file:{DOCUMENTED}/agiloft"), ("relative", "file:secrets/agiloft")):
        cfg = config_mod.Config.model_validate({
            "tenants": {"contoso": {"tenant_id": "11111111-2222-3333-4444-555555555555", "monitor_app": "agiloft"}},
            "apps": {"agiloft": {"tenant": "contoso", "client_id": "99999999-aaaa-bbbb-cccc-dddddddddddd",
                                 "secret": ref, "rotation": {"automated": True}}}})
        cfg.base_dir = Path("/etc/mailwarden")
        out.append((name, cfg))
    return out


def test_every_directory_automated_rotation_writes_is_writable():
    configs = _configs()
    assert sum(len(rotation_writes(cfg)) for _, cfg in configs) >= 2
    for name, cfg in configs:
        for directory in rotation_writes(cfg):
            assert covered(directory), f"{name}: automated rotation writes in {directory}, not in the unit's " \
                                       f"ReadWritePaths {[str(p) for p in writable()]}"
