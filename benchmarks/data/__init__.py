"""Datasets the benchmarks use: generated on the fly, never downloaded."""
