"""(being written) densenet architectures."""
