"""Hardware telemetry (GPU readings through NVML). Submodules import their heavy dependencies
lazily, so importing this package is cheap on machines without a GPU."""
