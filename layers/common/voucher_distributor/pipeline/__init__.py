"""The pipeline's use cases: each wires the pure domain to the adapters for one handler."""
