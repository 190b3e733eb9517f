"""A local emulator of the providers' HTTP APIs, for development, tests and benchmarks."""
