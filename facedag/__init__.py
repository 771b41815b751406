"""facedag: a face-swap video pipeline as a cached, resumable DVC DAG driven by Prefect.

The library holds one module per concern; `stages/` are thin DVC entry points over it
and `flows/` runs them with Prefect. Nothing here imports DVC or Prefect.
"""

__version__ = "0.1.0"
