"""Plugins that must be reported as broken without breaking anything else."""
