"""The train stage: declared in dvc.yaml (frozen) so the DAG is whole; built by the model-half issue.

Until then it refuses to run, and writes nothing: a placeholder output would let DVC cache
a result that does not exist.
"""

import sys

if __name__ == "__main__":
    print("train: not built yet (the model half of the pipeline lands with a later release)", file=sys.stderr)
    sys.exit(1)
