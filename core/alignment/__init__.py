"""Permutation alignment: specs, weight/activation matching and assignment solvers."""
