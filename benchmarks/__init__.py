"""Throughput and memory benchmarks (`make bench`), each beside a baseline measured in the same run."""
