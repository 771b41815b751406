"""Prefect flows over the DVC DAG. No face logic lives here: each task runs one DVC stage."""

import os

# Telemetry off before Prefect or DVC is imported: both read these at import time.
for _key, _value in (("DO_NOT_TRACK", "1"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DVC_NO_ANALYTICS", "1")):
    os.environ.setdefault(_key, _value)
