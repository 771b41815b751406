"""Prefect flows over the DVC DAG. No face logic lives here: each task runs one DVC stage."""
