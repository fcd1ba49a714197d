"""Writes the serving bento's build file for a machine that reaches PyPI only through a
TLS proxy and has torch's CPU wheel on disk (``make images-local``): torch from
``/opt/wheels`` (mounted into the build) instead of download.pytorch.org, and pip and uv
told where the proxy's CA bundle is (the host's ``/etc/ssl/certs``, mounted).

Usage: python images/local_bentofile.py OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

spec = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
spec["python"].pop("extra_index_url", None)
spec["python"]["find_links"] = ["/opt/wheels"]
spec["envs"] += [{"name": "SSL_CERT_FILE", "value": BUNDLE},
                 {"name": "PIP_CERT", "value": BUNDLE}]
out = Path(sys.argv[1])
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(yaml.safe_dump(spec, sort_keys=False))
