"""Benchmarks (not tests): throughput and memory, each beside a reference peer in the same run."""
