"""(being written) classic architectures."""
