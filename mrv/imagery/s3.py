"""S3 asset access (``s3://`` hrefs, read by GDAL's ``/vsis3/``), configured only by GDAL's own settings.

GDAL reads its S3 configuration from the environment (GDAL "Virtual File Systems", ``/vsis3/``):
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``AWS_PROFILE`` and the shared credentials file, or
``AWS_NO_SIGN_REQUEST=YES`` for public buckets), ``AWS_S3_ENDPOINT`` for a non-AWS store,
``AWS_VIRTUAL_HOSTING=FALSE`` for path-style addressing and ``AWS_HTTPS=NO`` for plain http. This package
never sets, logs or writes any of them; it only checks, before reading, that the ones a store needs are
present, and names the missing ones.

Copernicus Data Space assets live in the ``eodata`` bucket of ``eodata.dataspace.copernicus.eu``
(CDSE documentation, "S3 access": endpoint ``https://eodata.dataspace.copernicus.eu``, keys from the S3
credentials page of the dashboard, path-style addressing).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mrv.errors import ConfigError

__all__ = ["check_s3_settings"]

CDSE_BUCKET = "eodata"
CDSE_ENDPOINT = "eodata.dataspace.copernicus.eu"
CREDENTIAL_SETTINGS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _is_s3(href: str) -> bool:
    return href.startswith(("s3://", "/vsis3/"))


def _bucket(href: str) -> str:
    rest = href.removeprefix("s3://").removeprefix("/vsis3/")
    return rest.split("/", 1)[0]


def _has_credentials(env: dict[str, str]) -> bool:
    if env.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "ON", "1"):
        return True
    if all(env.get(k) for k in CREDENTIAL_SETTINGS):
        return True
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    shared = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    return bool(env.get("AWS_PROFILE")) or shared.is_file()


def check_s3_settings(hrefs: Iterable[str], env: dict[str, str] | None = None) -> None:
    """Raise :class:`~mrv.errors.ConfigError` when ``s3://`` assets are to be read without the settings GDAL needs.

    Only the *names* of missing settings appear in the message, never a value.
    """
    env = dict(os.environ) if env is None else env
    buckets = {_bucket(h) for h in hrefs if _is_s3(h)}
    if not buckets:
        return
    missing: list[str] = []
    if not _has_credentials(env):
        missing += [k for k in CREDENTIAL_SETTINGS if not env.get(k)]
    if CDSE_BUCKET in buckets and not env.get("AWS_S3_ENDPOINT"):
        missing.append("AWS_S3_ENDPOINT")
    if not missing:
        return
    hint = (
        f" For Copernicus Data Space set AWS_S3_ENDPOINT={CDSE_ENDPOINT}, AWS_VIRTUAL_HOSTING=FALSE and the S3 "
        "keys from its dashboard (S3 credentials) as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
        if CDSE_BUCKET in buckets
        else " Set them in the environment (or AWS_NO_SIGN_REQUEST=YES for a public bucket)."
    )
    raise ConfigError(
        f"The imagery assets are on S3 (bucket(s) {', '.join(sorted(buckets))}), but {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not set, so GDAL cannot read them.{hint}"
    )
