"""The process model: stage workers, the pipeline that wires them, collectors and telemetry."""
