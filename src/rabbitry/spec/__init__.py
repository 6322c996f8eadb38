"""The spec: loading ``topology.yaml`` with positions, the model, and the checks."""
