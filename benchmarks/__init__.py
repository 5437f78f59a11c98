"""Shared yardstick, data sources and benchmark harness for the efficient-inference methods in this repo."""
