"""(being written) inception architectures."""
